"""Per-component progress lines (start, finish or cache hit, timing) from the runners' own logs.

TFX's runners have no callback API, but they log "Component X is running." / "... is finished."
(LocalDagRunner), "node X is running." (BeamDagRunner) and "A cached execution N is used."; a
logging handler turns those into short lines on stdout.
"""

import logging
import re
import sys
import time
from typing import Dict, List, Tuple

_START = re.compile(r"^(?:Component|node) (\S+) is running\.$")
_FINISH = re.compile(r"^(?:Component|node) (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution (\d+) is used\.$")
# Our own components' progress messages, passed through as they are.
_OWN_PROGRESS = re.compile(r"^DiffusionEvaluator: ")


class ProgressHandler(logging.Handler):
  """Prints "[pipeline] <node> started/finished/cached in <s>" and keeps a timing summary."""

  def __init__(self, stream=None):
    super().__init__(level=logging.INFO)
    self.stream = stream or sys.stdout
    self.started: Dict[str, float] = {}
    self.cached: set = set()
    self.summary: List[Tuple[str, float, bool]] = []
    self._current = None

  def emit(self, record: logging.LogRecord) -> None:
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return
    if match := _START.match(message):
      self._current = match.group(1)
      self.started[self._current] = time.time()
      self._print(f"{self._current} started")
    elif _OWN_PROGRESS.match(message):
      self._print(message)
    elif _CACHED.match(message) and self._current:
      self.cached.add(self._current)
    elif match := _FINISH.match(message):
      node = match.group(1)
      seconds = time.time() - self.started.get(node, time.time())
      cached = node in self.cached
      self.summary.append((node, seconds, cached))
      self._print(f"{node} {'served from cache' if cached else 'finished'} in {seconds:.1f} s")

  def _print(self, text: str) -> None:
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)


def install() -> ProgressHandler:
  """Attaches a ProgressHandler to the root logger (absl logs go through it), in place of one an
  earlier run in this process attached (each line once, each run's own summary)."""
  handler = ProgressHandler()
  root = logging.getLogger()
  for earlier in [h for h in root.handlers if isinstance(h, ProgressHandler)]:
    root.removeHandler(earlier)
  root.addHandler(handler)
  if root.level > logging.INFO or root.level == logging.NOTSET:
    root.setLevel(logging.INFO)
  return handler
