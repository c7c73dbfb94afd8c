"""AnomalyGate: fails the run when ExampleValidator reports anomalies in any split.

ExampleValidator only records anomalies; TFX lets the run continue. Transform depends on this
gate, so data that breaks the schema never reaches training.
"""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

# ExampleValidator's per-split file name and its "blessed" custom property.
_SCHEMA_DIFF_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
  """The examples do not match the schema."""


def _describe(anomalies: anomalies_pb2.Anomalies) -> str:
  lines = []
  for feature, info in anomalies.anomaly_info.items():
    lines.append(f"{feature}: {info.short_description} ({info.description})")
  if anomalies.HasField("dataset_anomaly_info"):
    lines.append(f"dataset: {anomalies.dataset_anomaly_info.description}")
  return "; ".join(lines)


def check_anomalies(anomalies_artifact) -> None:
  """Raises DataAnomaliesError naming every split and feature with an anomaly."""
  problems = []
  for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
    path = os.path.join(artifact_utils.get_split_uri([anomalies_artifact], split), _SCHEMA_DIFF_FILE)
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
    if anomalies.anomaly_info or anomalies.HasField("dataset_anomaly_info"):
      problems.append(f"split {split!r}: {_describe(anomalies)}")
  if problems:
    raise DataAnomaliesError("ExampleValidator found anomalies; stopping the run. "
                             + " | ".join(problems))


@tfx.dsl.components.component
def AnomalyGate(anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]):  # pylint: disable=invalid-name
  check_anomalies(anomalies)
