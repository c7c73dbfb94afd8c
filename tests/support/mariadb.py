"""A throwaway MariaDB server for tests: its own data dir, socket and free loopback port, started
as a child process (no system service), with one database and one user, stopped afterwards.

  with mariadb.server(tmp_dir) as db:   # or the `mariadb_server` fixture (module scope)
    db.address                          # "127.0.0.1:PORT/mlmd", as --metadata-mysql takes it
    db.environ                          # {MLMD_MYSQL_USER: ..., MLMD_MYSQL_PASSWORD: ...}

MariaDB comes from the Debian packages (scripts/install_mariadb.sh); tests skip without it.
"""

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import time
from typing import Dict, Iterator, List

import pytest

from pipeline import metadata

# mariadbd lives in /usr/sbin, which a non-root PATH often lacks.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MARIADBD = shutil.which("mariadbd", path=_SEARCH_PATH)
INSTALL_DB = shutil.which("mariadb-install-db", path=_SEARCH_PATH)
CLIENT = shutil.which("mariadb", path=_SEARCH_PATH)
SKIP_REASON = ("MariaDB is not installed (needs mariadbd, mariadb-install-db and the mariadb "
               "client); bash scripts/install_mariadb.sh installs it")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


def available() -> bool:
  return bool(MARIADBD and INSTALL_DB and CLIENT)


@dataclasses.dataclass(frozen=True)
class Server:
  host: str
  port: int
  database: str
  user: str
  password: str
  socket_path: str

  @property
  def address(self) -> str:
    return f"{self.host}:{self.port}/{self.database}"

  @property
  def environ(self) -> Dict[str, str]:
    """The environment variables pipeline/metadata.py reads the credentials from."""
    return {metadata.USER_ENV: self.user, metadata.PASSWORD_ENV: self.password}

  def sql(self, statements: str) -> str:
    """Runs SQL as the server's root user (over its socket); returns the client's output."""
    return _client(self.socket_path, statements)


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _client(socket_path: str, statements: str) -> str:
  result = subprocess.run(
      [CLIENT, "--no-defaults", f"--socket={socket_path}", "--user=root", "--batch",
       "--execute", statements], capture_output=True, text=True, timeout=30, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"mariadb client failed ({result.returncode}): {result.stderr.strip()}")
  return result.stdout


def _as_root_options() -> List[str]:
  # mariadbd refuses to run as root unless told to; any other user runs as itself.
  return ["--user=root"] if os.geteuid() == 0 else []


def _log_tail(path: str, lines: int = 20) -> str:
  if not os.path.exists(path):
    return "(no log)"
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-lines:])


@contextlib.contextmanager
def server(base_dir: str, database: str = "mlmd", user: str = "mlmd",
           password: str = "mlmd-test-password") -> Iterator[Server]:
  """Initialises a data dir under `base_dir`, starts mariadbd on 127.0.0.1, creates `database`
  and `user` (all privileges on it), yields the Server, and shuts it down."""
  if not available():
    raise RuntimeError(SKIP_REASON)
  base_dir = os.path.abspath(base_dir)
  data_dir = os.path.join(base_dir, "data")
  socket_path = os.path.join(base_dir, "mariadbd.sock")  # under 108 bytes for AF_UNIX
  log_path = os.path.join(base_dir, "mariadbd.err")
  os.makedirs(base_dir, exist_ok=True)
  # Root without a password over the socket whatever the OS user; no test database.
  subprocess.run(
      [INSTALL_DB, "--no-defaults", f"--datadir={data_dir}", "--skip-test-db",
       "--auth-root-authentication-method=normal", *_as_root_options()],
      capture_output=True, text=True, timeout=120, check=True)
  port = _free_port()
  process = subprocess.Popen(
      [MARIADBD, "--no-defaults", f"--datadir={data_dir}", f"--socket={socket_path}",
       f"--port={port}", "--bind-address=127.0.0.1", f"--log-error={log_path}",
       f"--pid-file={os.path.join(base_dir, 'mariadbd.pid')}", "--skip-name-resolve",
       # A test server: small memory, no fsync per commit (the data dir is thrown away).
       "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=2",
       *_as_root_options()],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
      if process.poll() is not None:
        raise RuntimeError(f"mariadbd exited ({process.returncode}):\n{_log_tail(log_path)}")
      try:
        _client(socket_path, "SELECT 1")
        break
      except RuntimeError:
        if time.monotonic() > deadline:
          raise RuntimeError(f"mariadbd not ready in {START_TIMEOUT_S} s:\n{_log_tail(log_path)}")
        time.sleep(0.2)
    _client(socket_path,
            f"CREATE DATABASE `{database}`; "
            f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'; "
            f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%';")
    yield Server("127.0.0.1", port, database, user, password, socket_path)
  finally:
    process.terminate()  # SIGTERM: mariadbd's own clean shutdown
    try:
      process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


@pytest.fixture(scope="module")
def mariadb_server(tmp_path_factory) -> Iterator[Server]:
  """A module's MariaDB server (see `server`); skips the test when MariaDB is not installed."""
  if not available():
    pytest.skip(SKIP_REASON)
  with server(str(tmp_path_factory.mktemp("mariadb"))) as db:
    yield db
