"""The pipeline root's lock: a second run (pipeline.retrain or pipeline.run) on one pipeline root
is refused at once with its own exit code; the lock of a killed run is free again."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pipeline import lock
from pipeline import retrain
from pipeline import run as run_lib

_HOLD = textwrap.dedent("""
    import sys, time
    from pipeline import lock
    with lock.pipeline_root_lock(sys.argv[1]):
      print("held", flush=True)
      time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
  """A separate process holding the lock on tmp_path/root until killed."""
  root = str(tmp_path / "root")
  process = subprocess.Popen([sys.executable, "-c", _HOLD, root], stdout=subprocess.PIPE,
                             text=True, cwd=os.getcwd())
  assert process.stdout.readline().strip() == "held"
  yield root, process
  process.kill()
  process.wait()


def test_a_second_retrain_on_a_locked_root_exits_at_once_with_the_lock_code(holder, capsys):
  root, process = holder
  code = retrain.main(["--profile", "smoke", "--pipeline-root", root,
                       "--serving-dir", root + "_serving"])
  assert code == retrain.EXIT_CODES["locked"] == 5
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary["outcome"] == "locked"
  assert f"pid {process.pid}" in summary["error"] and root in summary["error"]
  assert not os.path.exists(os.path.join(root, "metadata.sqlite"))  # nothing ran


def test_the_lock_of_a_killed_run_is_free_again(holder):
  root, process = holder
  with pytest.raises(lock.Locked):
    with lock.pipeline_root_lock(root):
      pass
  process.send_signal(signal.SIGKILL)
  process.wait()
  with lock.pipeline_root_lock(root):  # no stale lock to clear by hand
    assert os.path.exists(os.path.join(root, lock.LOCK_FILE))


def test_pipeline_run_is_refused_on_a_locked_root_too(holder, capsys):
  root, _ = holder
  code = run_lib.main(["--profile", "smoke", "--pipeline-root", root,
                       "--serving-dir", root + "_serving"])
  assert code == run_lib.LOCKED_EXIT_CODE
  assert "is using" in capsys.readouterr().err
