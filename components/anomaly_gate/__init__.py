"""Stops the pipeline when ExampleValidator found anomalies."""

from components.anomaly_gate.component import AnomalyGate, check_anomalies  # noqa: F401
