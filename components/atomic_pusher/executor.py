"""The AtomicPusher's executor: TFX's filesystem push made atomic, with retention.

TFX's Pusher copies the model straight into `<serving_dir>/<version>/`: a run killed mid-copy
leaves a partial version that TF Serving, which loads the highest number it finds, tries to
load. Here the copy goes to a hidden sibling (`.tmp-<version>`, a name TF Serving ignores), each
file is synced, and one rename makes the version appear whole. A leftover hidden copy of a killed
push is removed by the next push. A model identical to the latest served version is not pushed
again (a rerun with nothing new pushes nothing). After a push, only the newest `keep_versions`
complete versions stay; the version TF Serving serves (the highest) is always among them.
"""

import hashlib
import json
import os
import shutil
import time
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from core import serving_contract

KEEP_VERSIONS_KEY = "keep_versions"
TEMP_PREFIX = ".tmp-"
# On the pushed_model artifact when nothing was copied because the latest version is this model.
SKIPPED_REASON_PROPERTY = "push_skipped"


def model_digest(model_dir: str) -> str:
  """A hash of every file's relative path and bytes under `model_dir`."""
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(model_dir):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, model_dir).encode())
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
  return digest.hexdigest()


def _fsync_tree(directory: str) -> None:
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        os.fsync(f.fileno())
    descriptor = os.open(root, os.O_RDONLY)
    try:
      os.fsync(descriptor)
    finally:
      os.close(descriptor)


def remove_partial_pushes(serving_dir: str) -> List[str]:
  """Removes hidden copies left by killed pushes; returns their paths."""
  removed = []
  for name in os.listdir(serving_dir):
    if name.startswith(TEMP_PREFIX):
      shutil.rmtree(os.path.join(serving_dir, name), ignore_errors=True)
      removed.append(os.path.join(serving_dir, name))
  return removed


def push_atomically(model_dir: str, serving_dir: str) -> str:
  """Copies `model_dir` to `<serving_dir>/<version>/` through a hidden copy and one rename.

  The version is the Unix time, as TFX's Pusher numbers it, or one above the highest existing
  version when that is larger. Returns the version's path.
  """
  os.makedirs(serving_dir, exist_ok=True)
  existing = serving_contract.numeric_versions(serving_dir)
  version = max(int(time.time()), existing[-1] + 1 if existing else 0)
  temp_dir = os.path.join(serving_dir, f"{TEMP_PREFIX}{version}")
  shutil.copytree(model_dir, temp_dir)
  _fsync_tree(temp_dir)
  version_dir = os.path.join(serving_dir, str(version))
  os.rename(temp_dir, version_dir)
  descriptor = os.open(serving_dir, os.O_RDONLY)  # the rename itself, durable
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)
  return version_dir


def keep_latest_versions(serving_dir: str, keep_versions: int) -> List[str]:
  """Removes all but the newest `keep_versions` complete versions, and incomplete numeric
  folders below the newest; returns the removed paths."""
  complete = [v for v in serving_contract.numeric_versions(serving_dir)
              if serving_contract.is_saved_model_dir(os.path.join(serving_dir, str(v)))]
  kept = set(complete[-keep_versions:])
  newest = complete[-1] if complete else None
  removed = []
  for version in serving_contract.numeric_versions(serving_dir):
    if version in kept or newest is None or version > newest:
      continue
    path = os.path.join(serving_dir, str(version))
    shutil.rmtree(path)
    removed.append(path)
  return removed


class Executor(tfx_pusher_executor.Executor):
  """TFX's Pusher executor (blessing checks, artifact properties) with an atomic filesystem push."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    model_dir = self.GetModelPath(input_dict)
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              destination)
    if destination.WhichOneof("destination") != "filesystem":
      raise NotImplementedError("AtomicPusher pushes to a filesystem destination only")
    serving_dir = destination.filesystem.base_directory
    if "://" in serving_dir:
      # A rename is atomic on a local (or mounted) filesystem only: elsewhere, TFX's own push.
      logging.warning("AtomicPusher: %s is not a local path; pushing with TFX's Pusher",
                      serving_dir)
      super().Do(input_dict, output_dict, exec_properties)
      return
    custom_config = json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
                               or "{}")
    keep_versions = int(custom_config.get(KEEP_VERSIONS_KEY, 3))

    os.makedirs(serving_dir, exist_ok=True)
    for path in remove_partial_pushes(serving_dir):
      logging.warning("AtomicPusher: removed %s, left by an interrupted push", path)
    latest = serving_contract.latest_version_dir(serving_dir)
    if latest and model_digest(latest) == model_digest(model_dir):
      logging.info("AtomicPusher: %s already holds this model; nothing pushed", latest)
      self._MarkNotPushed(model_push)
      model_push.set_string_custom_property(SKIPPED_REASON_PROPERTY, f"identical to {latest}")
      return
    version_dir = push_atomically(model_dir, serving_dir)
    logging.info("AtomicPusher: model written to %s", version_dir)
    for path in keep_latest_versions(serving_dir, keep_versions):
      logging.info("AtomicPusher: removed old version %s (keeping %d)", path, keep_versions)
    # The pushed model archived in the artifact, as TFX's Pusher does.
    shutil.copytree(model_dir, model_push.uri, dirs_exist_ok=True)
    self._MarkPushed(model_push, pushed_destination=version_dir,
                     pushed_version=os.path.basename(version_dir))
