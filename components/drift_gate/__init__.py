"""Stops the run when a new span's statistics drifted from the previous span's (TFDV)."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)

from components.drift_gate.component import DriftGate
from components.drift_gate.component import DriftGateSpec
from components.drift_gate.component import LatestStatisticsPerSpanStrategy
from components.drift_gate.executor import DriftError

__all__ = ["DriftError", "DriftGate", "DriftGateSpec", "LatestStatisticsPerSpanStrategy"]
