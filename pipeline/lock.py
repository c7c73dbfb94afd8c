"""One run at a time on a pipeline root: its ML Metadata store and artifacts are not shared.

The lock is the kernel's (`filelock` over flock), released when its process ends however it
ends, so a killed run leaves no stale lock behind. Its holder writes its pid beside it, so a
refused run can say who holds it.
"""

import contextlib
import os
from typing import Iterator

import filelock

LOCK_FILE = ".pipeline.lock"
LOCK_OWNER_FILE = ".pipeline.lock.owner"


class Locked(RuntimeError):
  """Another process holds the pipeline root's lock."""


@contextlib.contextmanager
def pipeline_root_lock(pipeline_root: str) -> Iterator[None]:
  """Holds the pipeline root's lock, or raises Locked at once naming its holder."""
  os.makedirs(pipeline_root, exist_ok=True)
  owner_path = os.path.join(pipeline_root, LOCK_OWNER_FILE)
  held = filelock.FileLock(os.path.join(pipeline_root, LOCK_FILE), timeout=0)
  try:
    held.acquire()
  except filelock.Timeout:
    owner = "another process"
    if os.path.exists(owner_path):
      with open(owner_path) as f:
        owner = f.read().strip() or owner
    raise Locked(f"another run ({owner}) is using {pipeline_root}") from None
  try:
    with open(owner_path, "w") as f:
      f.write(f"pid {os.getpid()}")
    yield
  finally:
    if os.path.exists(owner_path):
      os.remove(owner_path)
    held.release()
