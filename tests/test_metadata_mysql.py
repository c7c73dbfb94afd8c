"""ML Metadata on a MySQL-compatible server (--metadata-mysql), against a real MariaDB.

The flag's format and the credentials' environment variables are checked without a server. The
rest starts mariadbd from tests/support/mariadb.py (its own data dir, a free loopback port) and
skips when MariaDB is not installed (bash scripts/install_mariadb.sh). The slow test runs the
smoke pipeline through the command line with its metadata on the server, twice: the first run's
executions and lineage are in the server, and the second takes every node from the cache there.
"""

import dataclasses
import os
from typing import Dict, Set

import pytest

from core import config as config_lib
from pipeline import definition
from pipeline import metadata
from pipeline import retrain
from pipeline import run as run_lib
from tests.support import mariadb
from tests.support.mariadb import mariadb_server  # noqa: F401  (fixture)

ALL_NODES = ("MnistExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "AnomalyGate",
             "DriftGate", "Transform", definition.DIFFUSION_TRAINER_ID,
             definition.CLASSIFIER_TRAINER_ID, "DiffusionEvaluator", definition.PUSHER_ID)


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:3306/mlmd", ("127.0.0.1", 3306, "mlmd")),
    ("db.example.com:13306/ml_metadata", ("db.example.com", 13306, "ml_metadata")),
    ("[::1]:3306/mlmd", ("::1", 3306, "mlmd")),
])
def test_mysql_address_parses(address, expected):
  parsed = metadata.parse_mysql_address(address)
  assert (parsed.host, parsed.port, parsed.database) == expected


@pytest.mark.parametrize("address", [
    "127.0.0.1/mlmd", "127.0.0.1:3306", "127.0.0.1:port/mlmd", "127.0.0.1:0/mlmd",
    "127.0.0.1:70000/mlmd", "user:pw@127.0.0.1:3306/mlmd", "127.0.0.1:3306/ml-md", ""])
def test_malformed_mysql_address_is_refused(address):
  with pytest.raises(ValueError, match="HOST:PORT/DATABASE|port"):
    metadata.parse_mysql_address(address)


def test_metadata_mysql_flag_sets_the_config():
  config = run_lib.config_from_args(run_lib.parse_args(["--metadata-mysql", "db:3306/mlmd"]))
  assert config.metadata_mysql == "db:3306/mlmd"
  assert run_lib.config_from_args(run_lib.parse_args([])).metadata_mysql is None


def test_malformed_metadata_mysql_flag_exits_with_the_format(capsys):
  with pytest.raises(SystemExit) as exit_info:
    run_lib.parse_args(["--metadata-mysql", "db/mlmd"])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert "--metadata-mysql" in error and "HOST:PORT/DATABASE" in error


def test_connection_config_is_sqlite_by_default_and_mysql_with_the_flag(tmp_path):
  config = config_lib.profile("smoke", pipeline_root=str(tmp_path))
  sqlite = metadata.connection_config(config)
  assert sqlite.sqlite.filename_uri == os.path.join(str(tmp_path), "metadata.sqlite")
  server = dataclasses.replace(config, metadata_mysql="127.0.0.1:3306/mlmd")
  mysql = metadata.connection_config(
      server, environ={metadata.USER_ENV: "alice", metadata.PASSWORD_ENV: "secret"})
  assert (mysql.mysql.host, mysql.mysql.port, mysql.mysql.database) == ("127.0.0.1", 3306, "mlmd")
  assert (mysql.mysql.user, mysql.mysql.password) == ("alice", "secret")


def test_mysql_without_a_user_names_the_environment_variable():
  config = config_lib.profile("smoke", metadata_mysql="127.0.0.1:3306/mlmd")
  with pytest.raises(ValueError, match=metadata.USER_ENV):
    metadata.connection_config(config, environ={})


@pytest.fixture
def server_environ(mariadb_server, monkeypatch):  # pylint: disable=redefined-outer-name
  for name, value in mariadb_server.environ.items():
    monkeypatch.setenv(name, value)
  return mariadb_server


def test_ml_metadata_client_reads_back_from_the_server(server_environ, tmp_path):
  # pylint: disable-next=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2
  config = config_lib.profile("smoke", pipeline_root=str(tmp_path),
                              metadata_mysql=server_environ.address)
  store = metadata.open_store(config)
  type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="RoundTrip"))
  [artifact_id] = store.put_artifacts([metadata_store_pb2.Artifact(type_id=type_id, uri="/x")])
  # A second client, as another worker would open it: the server holds the artifact.
  assert [a.uri for a in metadata.open_store(config).get_artifacts_by_id([artifact_id])] == ["/x"]
  assert "RoundTrip" in server_environ.sql(
      f"SELECT name FROM `{server_environ.database}`.Type")
  assert not os.path.exists(config.metadata_sqlite)


def _node_states(store, pipeline_name) -> Dict[str, list]:
  """{node id: [execution state names, oldest first]}."""
  # pylint: disable-next=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2
  states = {}
  for context in store.get_contexts_by_type("node"):
    if context.name.startswith(pipeline_name + "."):
      executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
      states[context.name.split(".", 1)[1]] = [
          metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in executions]
  return states


def _upstream_nodes(store, artifact_id: int) -> Set[str]:
  """The nodes of every execution upstream of an artifact (its lineage, through events)."""
  # pylint: disable-next=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2
  outputs = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
  nodes, seen_executions, frontier = set(), set(), [artifact_id]
  while frontier:
    producers = {e.execution_id for e in store.get_events_by_artifact_ids(frontier)
                 if e.type in outputs} - seen_executions
    seen_executions |= producers
    for execution_id in producers:
      for context in store.get_contexts_by_execution(execution_id):
        if context.type == "node":
          nodes.add(context.name.split(".", 1)[1])
    frontier = sorted({e.artifact_id for e in store.get_events_by_execution_ids(sorted(producers))
                       if e.type == metadata_store_pb2.Event.INPUT})
  return nodes


@pytest.mark.slow
def test_smoke_pipeline_records_its_runs_on_the_server_and_caches_through_it(
    server_environ, tmp_path):
  argv = ["--profile", "smoke", "--pipeline-root", str(tmp_path / "pipeline_root"),
          "--serving-dir", str(tmp_path / "serving_model"),
          "--metadata-mysql", server_environ.address]
  config = run_lib.config_from_args(run_lib.parse_args(argv))
  assert run_lib.main(argv) == 0
  store = metadata.open_store(config)
  states = _node_states(store, config.pipeline_name)
  for node in ALL_NODES:
    assert states.get(node) == ["COMPLETE"], (node, states.get(node))
  # The pushed model's lineage reaches back through the Trainer and Transform to the Examples.
  pusher = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.Pusher")
  [pushed] = [a for a in store.get_artifacts_by_context(pusher.id) if a.type == "PushedModel"]
  assert {"Pusher", definition.DIFFUSION_TRAINER_ID, "Transform", "MnistExampleGen"} <= (
      _upstream_nodes(store, pushed.id))
  # Nothing went to a SQLite file.
  assert not os.path.exists(config.metadata_sqlite)

  # Again through pipeline.retrain (the same flags): every node from the cache on the server.
  assert retrain.main(argv) == retrain.EXIT_CODES["nothing_new"]
  states = _node_states(metadata.open_store(config), config.pipeline_name)
  for node in ALL_NODES:
    assert states[node] == ["COMPLETE", "CACHED"], (node, states[node])
  assert not os.path.exists(config.metadata_sqlite)
