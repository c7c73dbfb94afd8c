"""AtomicPusher's executor on temporary artifacts: atomic versions, retention, no duplicate push."""

import os

import pytest
from tfx.types import standard_artifacts
from tfx import v1 as tfx

from components.atomic_pusher import executor
from components.atomic_pusher import filesystem
from components.atomic_pusher.component import AtomicPusher
from core import serving_contract
from tests.support import pusher


def _model(root, name, payload):
  """A Model artifact whose Format-Serving dir looks like a SavedModel holding `payload`."""
  model = standard_artifacts.Model()
  model.uri = str(root / name)
  serving = os.path.join(model.uri, "Format-Serving")
  os.makedirs(os.path.join(serving, "variables"))
  with open(os.path.join(serving, "saved_model.pb"), "wb") as f:
    f.write(b"graph")
  with open(os.path.join(serving, "variables", "variables.data-00000-of-00001"), "wb") as f:
    f.write(payload)
  return model


def _push(root, model, serving_dir, blessed=True, keep_versions=3):
  count = len(os.listdir(root))
  return pusher.push(model, pusher.model_blessing(str(root / f"b{count}"), blessed), serving_dir,
                     str(root / f"pushed_{model.uri.rsplit('/', 1)[-1]}_{count}"), keep_versions)


def _listing(serving_dir):
  return sorted(os.listdir(serving_dir)) if os.path.isdir(serving_dir) else []


def test_a_blessed_model_appears_as_one_complete_version(tmp_path):
  serving_dir = str(tmp_path / "serving")
  pushed = _push(tmp_path, _model(tmp_path, "m1", b"one"), serving_dir)
  (version,) = _listing(serving_dir)
  assert version.isdigit()
  assert serving_contract.latest_version_dir(serving_dir) == os.path.join(serving_dir, version)
  assert pushed.get_int_custom_property("pushed") == 1
  assert pushed.get_string_custom_property("pushed_version") == version


def test_a_model_not_blessed_leaves_the_serving_dir_untouched(tmp_path):
  serving_dir = str(tmp_path / "serving")
  _push(tmp_path, _model(tmp_path, "m1", b"one"), serving_dir)
  before = {name: filesystem.model_digest(os.path.join(serving_dir, name))
            for name in _listing(serving_dir)}
  pushed = _push(tmp_path, _model(tmp_path, "m2", b"two"), serving_dir, blessed=False)
  assert pushed.get_int_custom_property("pushed") == 0
  assert {name: filesystem.model_digest(os.path.join(serving_dir, name))
          for name in _listing(serving_dir)} == before


def test_the_same_model_is_not_pushed_twice(tmp_path):
  serving_dir = str(tmp_path / "serving")
  model = _model(tmp_path, "m1", b"one")
  _push(tmp_path, model, serving_dir)
  again = _push(tmp_path, model, serving_dir)
  assert len(_listing(serving_dir)) == 1
  assert again.get_int_custom_property("pushed") == 0
  assert again.get_string_custom_property(executor.SKIPPED_REASON_PROPERTY).startswith(
      "identical to")


def test_only_the_newest_versions_stay_and_versions_always_increase(tmp_path):
  serving_dir = str(tmp_path / "serving")
  versions = []
  for index in range(5):
    pushed = _push(tmp_path, _model(tmp_path, f"m{index}", bytes([index])), serving_dir,
                   keep_versions=2)
    versions.append(int(pushed.get_string_custom_property("pushed_version")))
  assert versions == sorted(set(versions))  # pushes within one second still get new numbers
  assert _listing(serving_dir) == [str(v) for v in versions[-2:]]


def test_a_push_killed_mid_copy_is_invisible_and_cleaned_by_the_next(tmp_path, monkeypatch):
  serving_dir = str(tmp_path / "serving")
  _push(tmp_path, _model(tmp_path, "m1", b"one"), serving_dir)
  served = serving_contract.latest_version_dir(serving_dir)

  def copy_then_die(source, target):
    os.makedirs(os.path.join(target, "variables"))  # part of the files, then the process dies
    raise KeyboardInterrupt("killed")

  monkeypatch.setattr(filesystem.shutil, "copytree", copy_then_die)
  with pytest.raises(KeyboardInterrupt):
    _push(tmp_path, _model(tmp_path, "m2", b"two"), serving_dir)
  monkeypatch.undo()
  # What TF Serving sees: the previous complete version, and a hidden folder it ignores.
  assert serving_contract.latest_version_dir(serving_dir) == served
  assert [n for n in _listing(serving_dir) if n.isdigit()] == [os.path.basename(served)]
  _push(tmp_path, _model(tmp_path, "m3", b"three"), serving_dir)
  assert not [n for n in _listing(serving_dir) if n.startswith(filesystem.TEMP_PREFIX)]
  assert len(_listing(serving_dir)) == 2


def test_keep_versions_below_one_is_refused():
  with pytest.raises(ValueError, match="keep_versions"):
    AtomicPusher(model=tfx.dsl.Channel(type=standard_artifacts.Model),
                 model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
                 serving_dir="/tmp/s", keep_versions=0)
