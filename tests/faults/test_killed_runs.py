"""The pipeline process killed with SIGKILL in the middle of training and in the middle of
Transform (as an OOM killer, a preempted VM or a closed terminal would): the next run resumes the
Trainer from its last checkpoint and ends at exactly the configured steps, and a partial output is
never reused: the rerun's Transform output equals the uninterrupted one's, record for record.
(That a resumed run ends with the same weights as an uninterrupted one is pinned on the training
loop itself: tests/test_train.py.)"""

import collections
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from core import config as config_lib
from pipeline import metadata
from pipeline import run as run_lib

pytestmark = pytest.mark.slow

TRAIN_STEPS, LOG_EVERY = 300, 25
KILL_AFTER_STEP = 3 * LOG_EVERY  # a checkpoint was written at 2 * LOG_EVERY at the latest
_STEP_LINE = re.compile(r"^\[train\] step (\d+)/(\d+)")


def _flags(root):
  return ["--profile", "smoke", "--pipeline-root", str(root / "pipeline_root"),
          "--serving-dir", str(root / "serving"),
          "--set", f"train.train_steps={TRAIN_STEPS}",
          "--set", f"train.log_every_steps={LOG_EVERY}",
          "--set", f"train.checkpoint_every_steps={2 * LOG_EVERY}"]


def _start(module_args):
  return subprocess.Popen([sys.executable, "-m"] + module_args, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_when(process, predicate, then=lambda: None, timeout_s=900):
  """Reads the process's output until a line satisfies `predicate`, calls `then`, and SIGKILLs
  the process group."""
  deadline, lines = time.time() + timeout_s, []
  for line in process.stdout:
    lines.append(line)
    if predicate(line) or time.time() > deadline:
      break
  then()
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  assert predicate(lines[-1]), "".join(lines[-40:])
  return lines


def _finish(module_args):
  result = subprocess.run([sys.executable, "-m"] + module_args, capture_output=True, text=True,
                          timeout=1200, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout.splitlines()


def _executions(root, node):
  """[(state name, output dir names)] of `node`'s executions, oldest first."""
  config = config_lib.profile("smoke", pipeline_root=str(root / "pipeline_root"))
  store = metadata.open_store(config, readonly=True)
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  context = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.{node}")
  return [(metadata_store_pb2.Execution.State.Name(e.last_known_state), e.id)
          for e in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)]


def _records(examples_dir):
  """The examples of every split, as a multiset of deterministic serializations (a proto map's
  byte order may differ from process to process)."""
  files = sorted(glob.glob(os.path.join(examples_dir, "Split-*", "*")))
  assert files, examples_dir
  return collections.Counter(
      (os.path.basename(os.path.dirname(path)),
       tf.train.Example.FromString(record.numpy()).SerializeToString(deterministic=True))
      for path in files for record in tf.data.TFRecordDataset(path, compression_type="GZIP"))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
  root = tmp_path_factory.mktemp("killed")
  flags = _flags(root)
  outcome = {"root": root}
  # 1. Killed in the middle of training.
  killed = _start(["pipeline.run"] + flags)
  outcome["killed_lines"] = _kill_when(killed, lambda line: (
      (m := _STEP_LINE.match(line)) is not None and int(m.group(1)) >= KILL_AFTER_STEP))
  outcome["served_after_kill"] = sorted(os.listdir(root / "serving"))
  # 2. Run again: resumes and finishes.
  outcome["resumed_lines"] = _finish(["pipeline.run"] + flags)
  outcome["transform_after_full_run"] = _executions(root, "Transform")
  # 3. Killed in the middle of Transform (nothing cached, so Transform runs again from scratch).
  outputs = root / "pipeline_root" / "Transform" / "transformed_examples"
  before = set(os.listdir(outputs))

  def until_transform_writes():  # its execution registered, its output begun
    deadline = time.time() + 120
    while set(os.listdir(outputs)) == before and time.time() < deadline:
      time.sleep(0.2)
    time.sleep(1)

  killed = _start(["tests.support.partial_pipeline", "Transform"] + flags + ["--no-cache"])
  _kill_when(killed, lambda line: line.rstrip().endswith("Transform started"),
             until_transform_writes)
  outcome["transform_after_kill"] = _executions(root, "Transform")
  # 4. Run again, with the cache: the partial output must not be reused.
  _finish(["tests.support.partial_pipeline", "Transform"] + flags)
  outcome["transform_after_rerun"] = _executions(root, "Transform")
  return outcome


def test_a_run_killed_mid_training_pushed_nothing(scenario):
  assert scenario["served_after_kill"] == []


def test_the_next_run_resumes_from_the_last_checkpoint_and_ends_at_the_configured_steps(scenario):
  steps = [int(m.group(1)) for line in scenario["resumed_lines"]
           if (m := _STEP_LINE.match(line))]
  # A cold start would log step LOG_EVERY first; the resumed run starts past the checkpoint.
  assert steps[0] > 2 * LOG_EVERY - 1 and steps[0] % LOG_EVERY == 0, steps
  assert steps[-1] == TRAIN_STEPS
  root = scenario["root"]
  (summary_path,) = glob.glob(str(root / "pipeline_root" / "diffusion_trainer" / "model_run" / "*"
                                  / "training_summary.json"))
  with open(summary_path) as f:
    assert json.load(f)["steps"] == TRAIN_STEPS
  assert len(os.listdir(root / "serving")) == 1


def test_the_killed_trainer_execution_is_never_taken_for_a_finished_one(scenario):
  states = [state for state, _ in _executions(scenario["root"], "diffusion_trainer")]
  assert states == ["RUNNING", "COMPLETE"]  # the killed one stays as it was left


def test_a_transform_killed_midway_is_rerun_and_gives_the_uninterrupted_output(scenario):
  (complete_id,) = [i for s, i in scenario["transform_after_full_run"] if s == "COMPLETE"]
  killed_state, killed_id = scenario["transform_after_kill"][-1]
  assert killed_state == "RUNNING"
  rerun_state, rerun_id = scenario["transform_after_rerun"][-1]
  assert rerun_state == "COMPLETE" and rerun_id not in (complete_id, killed_id)
  transform_dir = scenario["root"] / "pipeline_root" / "Transform" / "transformed_examples"
  assert _records(transform_dir / str(rerun_id)) == _records(transform_dir / str(complete_id))
