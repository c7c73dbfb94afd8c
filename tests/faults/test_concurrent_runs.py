"""Two runs started at the same moment on one pipeline root, as two cron entries or two users
would: one runs, the other is refused at once with the lock's exit code and the holder's pid, and
the metadata store is intact afterwards (it opens, and every execution has a final state)."""

import json
import subprocess
import sys

import pytest

from core import config as config_lib
from pipeline import cli
from pipeline import metadata

pytestmark = pytest.mark.slow


def test_two_racing_runs_one_refused_and_the_store_intact(tmp_path):
  # --ingest-only: the race is about the lock and the store, not about training.
  argv = [sys.executable, "-m", "pipeline.retrain", "--profile", "smoke", "--ingest-only",
          "--pipeline-root", str(tmp_path / "root"), "--serving-dir", str(tmp_path / "serving")]
  racers = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
  results = [(racer.wait(timeout=900), *racer.communicate()) for racer in racers]
  codes = sorted(code for code, _, _ in results)
  assert codes == [cli.OK, cli.LOCKED], results
  (refused,) = [(out, err) for code, out, err in results if code == cli.LOCKED]
  assert json.loads(refused[0].strip().splitlines()[-1])["outcome"] == "locked"
  assert "is using" in refused[1] and "pid" in refused[1]

  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  config = config_lib.profile("smoke", pipeline_root=str(tmp_path / "root"))
  executions = metadata.open_store(config, readonly=True).get_executions()
  assert executions
  final = {metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED}
  assert all(e.last_known_state in final for e in executions), executions
