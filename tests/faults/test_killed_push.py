"""A push killed with SIGKILL at chosen points, and a push that runs out of disk: TF Serving's
view (the highest-numbered version) is always a complete model, and the next push finishes the
job and removes what the interrupted one left."""

import errno
import os
import shutil
import signal
import subprocess
import sys

import pytest
from tfx.types import standard_artifacts

from components.atomic_pusher import filesystem
from core import serving_contract
from tests.support import pusher

# A child process pushes with hooks that print where it is and then wait there to be killed.
_CHILD = r"""
import os, shutil, sys, time
from components.atomic_pusher import filesystem  # what the executor runs, without TFX's import

point, model_dir, serving_dir = sys.argv[1:4]

def reached(name):
  print(name, flush=True)
  if name == point:
    time.sleep(600)

copied = []
def copy2(source, target, **kwargs):
  result = shutil.copy2(source, target, **kwargs)
  copied.append(target)
  reached(f"copied-{len(copied)}")
  return result

copytree, rename, rmtree = shutil.copytree, os.rename, shutil.rmtree
def hooked_copytree(source, target, *args, **kwargs):  # copytree calls itself for subfolders
  return copytree(source, target, *args, **kwargs) if args else copytree(
      source, target, copy_function=copy2)
shutil.copytree = hooked_copytree
def hooked_rename(source, target):
  reached("before-rename")
  rename(source, target)
os.rename = hooked_rename
def hooked_rmtree(path, *args, **kwargs):
  reached("removing-old-version")
  rmtree(path, *args, **kwargs)
shutil.rmtree = hooked_rmtree
filesystem.push(os.path.join(model_dir, "Format-Serving"), serving_dir, keep_versions=1)
print("done", flush=True)
"""

NUM_FILES = 6


def make_model(directory: str, payload: bytes) -> str:
  """A Format-Serving dir shaped like a SavedModel, with NUM_FILES files."""
  serving = os.path.join(directory, "Format-Serving")
  os.makedirs(os.path.join(serving, "variables"))
  with open(os.path.join(serving, "saved_model.pb"), "wb") as f:
    f.write(b"graph" + payload)
  for shard in range(NUM_FILES - 1):
    with open(os.path.join(serving, "variables", f"variables.data-{shard:05d}"), "wb") as f:
      f.write(payload * 1000)
  return directory


def push(root: str, model_dir: str, serving_dir: str, keep_versions: int = 3):
  """AtomicPusher's executor on artifacts under `root`, for a blessed model at `model_dir`."""
  model = standard_artifacts.Model()
  model.uri = model_dir
  name = os.path.basename(model_dir)
  return pusher.push(model, pusher.model_blessing(os.path.join(root, f"blessing-{name}")),
                     serving_dir, os.path.join(root, f"pushed-{name}"), keep_versions)


def served_digest(serving_dir: str) -> str:
  """What TF Serving would load: the highest-numbered version, which must be a whole model."""
  versions = serving_contract.numeric_versions(serving_dir)
  highest = os.path.join(serving_dir, str(versions[-1]))
  assert serving_contract.is_saved_model_dir(highest), f"{highest} is not a complete SavedModel"
  return filesystem.model_digest(highest)


def _digest(model_dir):
  return filesystem.model_digest(os.path.join(model_dir, "Format-Serving"))


@pytest.mark.slow
@pytest.mark.parametrize("point, served", [
    ("copied-2", "old"),            # in the middle of copying the files
    ("before-rename", "old"),       # every file copied and synced, not yet renamed
    ("removing-old-version", "new"),  # the new version is in place, the old not yet removed
])
def test_a_push_killed_at_any_point_leaves_a_complete_model_served(point, served, tmp_path):
  root, serving_dir = str(tmp_path / "artifacts"), str(tmp_path / "serving")
  os.makedirs(root)
  old = make_model(str(tmp_path / "old"), b"o")
  new = make_model(str(tmp_path / "new"), b"n")
  push(root, old, serving_dir)
  child = subprocess.Popen([sys.executable, "-c", _CHILD, point, new, serving_dir],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
  try:
    for line in child.stdout:
      if line.strip() == point:
        break
    else:
      pytest.fail(f"the push never reached {point}; exit code {child.wait()}")
    os.killpg(child.pid, signal.SIGKILL)
  finally:
    child.kill()
    child.wait()
  expected = {"old": _digest(old), "new": _digest(new)}[served]
  assert served_digest(serving_dir) == expected
  # The next push completes, and nothing of the interrupted one is left.
  push(root, make_model(str(tmp_path / "next"), b"x"), serving_dir)
  assert served_digest(serving_dir) == _digest(str(tmp_path / "next"))
  names = os.listdir(serving_dir)
  assert not [n for n in names if n.startswith(filesystem.TEMP_PREFIX)]
  for name in names:
    assert serving_contract.is_saved_model_dir(os.path.join(serving_dir, name))


def test_a_push_that_runs_out_of_disk_fails_clearly_and_leaves_nothing(tmp_path, monkeypatch):
  root, serving_dir = str(tmp_path / "artifacts"), str(tmp_path / "serving")
  os.makedirs(root)
  old = make_model(str(tmp_path / "old"), b"o")
  push(root, old, serving_dir)
  before = sorted(os.listdir(serving_dir))
  copied = []
  copytree = shutil.copytree

  def copy2_until_full(source, target, **kwargs):
    if len(copied) == 2:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
    copied.append(target)
    return shutil.copy2(source, target, **kwargs)

  def hooked_copytree(source, target, *args, **kwargs):  # copytree calls itself for subfolders
    return copytree(source, target, *args, **kwargs) if args else copytree(
        source, target, copy_function=copy2_until_full)

  monkeypatch.setattr(filesystem.shutil, "copytree", hooked_copytree)
  with pytest.raises(OSError, match="No space left on device"):
    push(root, make_model(str(tmp_path / "new"), b"n"), serving_dir)
  assert sorted(os.listdir(serving_dir)) == before  # no version, no hidden partial copy
  assert served_digest(serving_dir) == _digest(old)
