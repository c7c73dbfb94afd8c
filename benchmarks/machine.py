"""The machine a benchmark ran on (its FLOP yardsticks are in trainer_module/flops.py)."""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import os  # noqa: E402
import platform  # noqa: E402

import tensorflow as tf  # noqa: E402


def describe() -> dict:
  return {"platform": platform.platform(), "python": platform.python_version(),
          "cpus": os.cpu_count(), "tensorflow": tf.__version__,
          "processor": platform.processor() or platform.machine()}
