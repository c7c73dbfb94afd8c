"""Blesses a candidate only when TF Serving could load and serve it: an InfraBlessing for Pusher."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)

from components.servability_gate.component import ServabilityGate
from components.servability_gate.component import ServabilityGateSpec
from components.servability_gate.executor import check_servability

__all__ = ["ServabilityGate", "ServabilityGateSpec", "check_servability"]
