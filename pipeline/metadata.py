"""The pipeline's ML Metadata store: a SQLite file (default) or a MySQL-compatible server.

Every part of the project that opens the store (the pipeline definition, pipeline.retrain's
summary) builds its connection here, from `PipelineConfig.metadata_sqlite` or, when set,
`PipelineConfig.metadata_mysql` ("HOST:PORT/DATABASE", the --metadata-mysql flag).

The server's credentials come from the environment, never the command line (where `ps` shows
them):
  MLMD_MYSQL_USER       the user (required with --metadata-mysql)
  MLMD_MYSQL_PASSWORD   its password (optional)
ML Metadata creates the database and its tables on first connection when the user may.
"""

import argparse
import dataclasses
import os
import re
from typing import Mapping, Optional

USER_ENV = "MLMD_MYSQL_USER"
PASSWORD_ENV = "MLMD_MYSQL_PASSWORD"

# HOST (a name, an IPv4 address or a bracketed IPv6 address), PORT, DATABASE (MySQL's unquoted
# identifier characters).
_MYSQL_ADDRESS = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]+)/(?P<database>[A-Za-z0-9_$]+)$")
MYSQL_ADDRESS_FORMAT = "HOST:PORT/DATABASE, e.g. 127.0.0.1:3306/mlmd"


@dataclasses.dataclass(frozen=True)
class MySqlAddress:
  host: str
  port: int
  database: str

  def __str__(self) -> str:
    return f"{self.host}:{self.port}/{self.database}"


def parse_mysql_address(address: str) -> MySqlAddress:
  """"HOST:PORT/DATABASE" as a MySqlAddress; ValueError saying what is wrong otherwise."""
  match = _MYSQL_ADDRESS.match(address or "")
  if not match:
    raise ValueError(f"ML Metadata MySQL address {address!r} is not {MYSQL_ADDRESS_FORMAT}")
  port = int(match.group("port"))
  if not 0 < port < 65536:
    raise ValueError(f"ML Metadata MySQL address {address!r}: port {port} is not in 1..65535")
  return MySqlAddress(match.group("host").strip("[]"), port, match.group("database"))


def uses_server(config) -> bool:
  return config.metadata_mysql is not None


def store_exists(config) -> bool:
  """Whether there is a store to read: the SQLite file exists; a server is always there."""
  return uses_server(config) or os.path.exists(config.metadata_sqlite)


def connection_config(config, readonly: bool = False,
                      environ: Optional[Mapping[str, str]] = None):
  """The metadata_store_pb2.ConnectionConfig for `config`'s store.

  `readonly` opens a SQLite file read-only (a server has no such mode; it ignores it).
  """
  # pylint: disable=g-import-not-at-top  (TFX is slow to import; --help need not wait for it)
  from ml_metadata.proto import metadata_store_pb2
  from tfx.orchestration import metadata as tfx_metadata
  if uses_server(config):
    address = parse_mysql_address(config.metadata_mysql)
    environ = os.environ if environ is None else environ
    user = environ.get(USER_ENV)
    if not user:
      raise ValueError(f"ML Metadata on MySQL ({address}) needs its user in ${USER_ENV} "
                       f"(and its password, if any, in ${PASSWORD_ENV})")
    return tfx_metadata.mysql_metadata_connection_config(
        host=address.host, port=address.port, database=address.database, username=user,
        password=environ.get(PASSWORD_ENV, ""))
  path = config.metadata_sqlite
  connection = tfx_metadata.sqlite_metadata_connection_config(
      path if "://" in path else os.path.abspath(path))
  if readonly:
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return connection


def open_store(config, readonly: bool = False):
  """An ml_metadata MetadataStore on `config`'s store."""
  from ml_metadata.metadata_store import metadata_store  # pylint: disable=g-import-not-at-top
  return metadata_store.MetadataStore(connection_config(config, readonly))


def mysql_address_argument(value: str) -> str:
  """argparse `type` for --metadata-mysql: the address as given, once its format is checked."""
  try:
    parse_mysql_address(value)
  except ValueError as error:
    raise argparse.ArgumentTypeError(str(error)) from None
  return value
