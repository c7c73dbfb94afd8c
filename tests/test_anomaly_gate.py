"""AnomalyGate: passes clean ExampleValidator output, stops the run on any anomaly."""

import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.anomaly_gate import component


def _anomalies_artifact(tmp_path, per_split):
  """An ExampleAnomalies artifact whose splits hold the given Anomalies protos."""
  artifact = standard_artifacts.ExampleAnomalies()
  artifact.uri = str(tmp_path / "anomalies")
  artifact.split_names = artifact_utils.encode_split_names(list(per_split))
  for split, anomalies in per_split.items():
    split_dir = os.path.join(artifact.uri, f"Split-{split}")
    os.makedirs(split_dir)
    with open(os.path.join(split_dir, "SchemaDiff.pb"), "wb") as f:
      f.write(anomalies.SerializeToString())
  return artifact


def _with_feature_anomaly(feature="label"):
  anomalies = anomalies_pb2.Anomalies()
  info = anomalies.anomaly_info[feature]
  info.short_description = "Out-of-range values"
  info.description = "Unexpectedly large value: 11."
  return anomalies


def test_no_anomalies_passes(tmp_path):
  artifact = _anomalies_artifact(tmp_path, {"train": anomalies_pb2.Anomalies(),
                                            "eval": anomalies_pb2.Anomalies()})
  component.check_anomalies(artifact)


def test_feature_anomaly_stops_the_run_naming_split_and_feature(tmp_path):
  artifact = _anomalies_artifact(tmp_path, {"train": anomalies_pb2.Anomalies(),
                                            "eval": _with_feature_anomaly("label")})
  with pytest.raises(component.DataAnomaliesError, match=r"split 'eval': label: Out-of-range"):
    component.check_anomalies(artifact)


def test_dataset_anomaly_stops_the_run(tmp_path):
  anomalies = anomalies_pb2.Anomalies()
  anomalies.dataset_anomaly_info.description = "Too few examples"
  artifact = _anomalies_artifact(tmp_path, {"train": anomalies})
  with pytest.raises(component.DataAnomaliesError, match="Too few examples"):
    component.check_anomalies(artifact)
