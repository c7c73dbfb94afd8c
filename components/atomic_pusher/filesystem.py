"""The filesystem half of the AtomicPusher, free of TFX: an atomic copy into a serving dir,
clean-up of interrupted copies, no duplicate push, and retention.

A version appears whole or not at all: the copy goes to a hidden sibling (`.tmp-<version>`, a
name TF Serving ignores), each file is synced, and one rename makes it visible.
"""

import hashlib
import json
import os
import shutil
import time
from typing import List, Optional, Tuple

from absl import logging

from core import serving_contract

TEMP_PREFIX = ".tmp-"


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
  try:
    shutil.copytree(model_dir, temp_dir)
    _fsync_tree(temp_dir)
  except OSError:
    # A full disk, say: the partial copy goes now (a killed process leaves it to the next push).
    shutil.rmtree(temp_dir, ignore_errors=True)
    raise
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


def push(model_dir: str, serving_dir: str, keep_versions: int) -> Tuple[Optional[str], str]:
  """Pushes `model_dir` to `serving_dir` unless its latest version already holds this model.

  Removes hidden copies of interrupted pushes first and keeps the newest `keep_versions` versions
  after. Returns (the new version's path, "") or (None, why nothing was pushed).
  """
  os.makedirs(serving_dir, exist_ok=True)
  for path in remove_partial_pushes(serving_dir):
    logging.warning("AtomicPusher: removed %s, left by an interrupted push", path)
  latest = serving_contract.latest_version_dir(serving_dir)
  if latest and model_digest(latest) == model_digest(model_dir):
    logging.info("AtomicPusher: %s already holds this model; nothing pushed", latest)
    return None, f"identical to {latest}"
  version_dir = push_atomically(model_dir, serving_dir)
  logging.info("AtomicPusher: model written to %s", version_dir)
  for path in keep_latest_versions(serving_dir, keep_versions):
    logging.info("AtomicPusher: removed old version %s (keeping %d)", path, keep_versions)
  return version_dir, ""
