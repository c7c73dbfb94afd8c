"""The machine a benchmark ran on (its FLOP yardsticks are in trainer_module/flops.py)."""

import os
import platform
from typing import Optional, Sequence, Tuple

import tensorflow as tf


# Vector units that decide how fast this CPU runs the network; virtual machines of one name can
# come with different ones, so a result records which it had.
_VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def _cpuinfo() -> dict:
  """The CPU's model name and which of _VECTOR_FLAGS it has (Linux; empty elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = f.read().splitlines()
  except OSError:
    return {}
  fields = dict(line.split(":", 1) for line in lines if ":" in line)
  fields = {key.strip(): value.strip() for key, value in fields.items()}
  flags = set(fields.get("flags", "").split())
  return {"cpu_model": fields.get("model name", ""),
          "cpu_vector_flags": [flag for flag in _VECTOR_FLAGS if flag in flags]}


# /proc/stat's aggregate "cpu" line: user nice system idle iowait irq softirq steal guest guest_nice
# (in jiffies since boot). guest and guest_nice are already counted in user and nice.
_STEAL_FIELD = 7
_ACCOUNTED_FIELDS = 8
Ticks = Tuple[int, int]  # (steal, total) jiffies


def cpu_ticks(stat_path: str = "/proc/stat") -> Optional[Ticks]:
  """(steal, total) jiffies of all CPUs since boot, or None where /proc/stat is unreadable.

  Steal is the time a virtual CPU was ready to run while the hypervisor ran something else: on a
  shared 2-core VM the benchmarks' figures move with it, and the guest cannot see it otherwise.
  """
  try:
    with open(stat_path) as f:
      fields = f.readline().split()
  except OSError:
    return None
  if len(fields) <= _ACCOUNTED_FIELDS or fields[0] != "cpu":
    return None
  ticks = [int(value) for value in fields[1:_ACCOUNTED_FIELDS + 1]]
  return ticks[_STEAL_FIELD], sum(ticks)


def steal_share(intervals: Sequence[Tuple[Optional[Ticks], Optional[Ticks]]]) -> Optional[float]:
  """The stolen share (0 to 1) of the CPUs' time over (before, after) cpu_ticks() readings, the
  intervals taken together; None if any reading is missing or no time passed."""
  if any(before is None or after is None for before, after in intervals):
    return None
  stolen = sum(after[0] - before[0] for before, after in intervals)
  total = sum(after[1] - before[1] for before, after in intervals)
  return stolen / total if total > 0 else None


def percent(share: Optional[float]) -> str:
  """A share such as steal_share()'s for a table: "3.0%", or "n/a" where it is unknown."""
  return "n/a" if share is None else f"{share:.1%}"


def onednn_enabled() -> bool:
  """Whether TensorFlow's oneDNN kernels are on (core/environment.py asks for them)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  except ImportError:  # a TensorFlow without the query: say what was asked for
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
  return bool(_pywrap_util_port.IsMklEnabled())


def describe() -> dict:
  return {"platform": platform.platform(), "python": platform.python_version(),
          "cpus": os.cpu_count(), "tensorflow": tf.__version__, "onednn": onednn_enabled(),
          "processor": platform.processor() or platform.machine(), **_cpuinfo()}
