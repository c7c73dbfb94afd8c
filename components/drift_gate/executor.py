"""Executor of the DriftGate: TFDV's drift comparator between the train split of two spans.

The pipeline's schema is copied and given a `drift_comparator` with a Jensen-Shannon divergence
threshold on `label` and `image` (DriftConfig); `tfdv.validate_statistics(statistics, schema,
previous_statistics=baseline)` then measures both features. Both are INT features whose statistics
(StatisticsGen, no schema) carry numeric histograms and no string statistics, so TFDV compares
their STANDARD histograms: 10 equal-width buckets over [min, max]. For `image` that is the
distribution of all pixel values (784 per example) in buckets of 25.5 grey levels. For `label`,
[0, 9] in 10 buckets puts each digit in a bucket of its own, so the divergence is that of the
digits' mix. Marking `label` categorical in the copy would change nothing: TFDV compares string
statistics only where the statistics hold them, and these do not.

Writes into the `anomalies` artifact's URI (the layout of ExampleValidator's ExampleAnomalies):
  Split-train/SchemaDiff.pb  the comparison anomalies and TFDV's drift measurements
                             (`drift_skew_info`), read with tfdv.load_anomalies_binary
  drift_report.json          {passed, split, span, baseline: {span, uri, id} | null,
                              features: {name: {jensen_shannon, threshold, drifted}},
                              problems: [...], message, num_baseline_candidates}
and sets its custom properties `blessed` ({"train": 1 passed, 0 drift, 2 no baseline}, the values
of TFX's DistributionValidator), `baseline_span` and `<feature>_jensen_shannon`.

Raises DriftError when a feature drifts past its threshold or cannot be compared: the run stops
here, and nodes after the gate never run. The files above stay at the artifact's URI, which the
message names.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import writer_utils

from core.config import DriftConfig
from core.config import IMAGE_KEY
from core.config import LABEL_KEY

# Keys of the component spec (component.py uses the same constants).
STATISTICS_KEY = "statistics"
BASELINE_STATISTICS_KEY = "baseline_statistics"
SCHEMA_KEY = "schema"
ANOMALIES_KEY = "anomalies"
DRIFT_CONFIG_KEY = "drift_config"

# The split compared: the one training reads.
SPLIT = "train"
SCHEMA_DIFF_FILE_NAME = "SchemaDiff.pb"
REPORT_FILE_NAME = "drift_report.json"

# The `blessed` custom property, with the values TFX's DistributionValidator uses.
BLESSED_PROPERTY = "blessed"
BLESSED_VALUE = 1
NOT_BLESSED_VALUE = 0
NO_BASELINE_VALUE = 2
BASELINE_SPAN_PROPERTY = "baseline_span"

# Anomalies that come from comparing two datasets; the others (schema violations) are
# ExampleValidator's to report.
_COMPARISON_ANOMALY_TYPES = frozenset([
    anomalies_pb2.AnomalyInfo.COMPARATOR_CONTROL_DATA_MISSING,
    anomalies_pb2.AnomalyInfo.COMPARATOR_TREATMENT_DATA_MISSING,
    anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH,
    anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
    anomalies_pb2.AnomalyInfo.COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH,
    anomalies_pb2.AnomalyInfo.COMPARATOR_LOW_NUM_EXAMPLES,
    anomalies_pb2.AnomalyInfo.COMPARATOR_HIGH_NUM_EXAMPLES,
])
_JENSEN_SHANNON = anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE


class DriftError(RuntimeError):
  """The new span's data drifted from the previous span's beyond the configured thresholds."""


def thresholds(config: DriftConfig) -> Dict[str, float]:
  """{feature: the largest Jensen-Shannon divergence from the previous span that passes}."""
  return {LABEL_KEY: config.label_max_jensen_shannon, IMAGE_KEY: config.pixel_max_jensen_shannon}


def drift_schema(schema: schema_pb2.Schema, config: DriftConfig) -> schema_pb2.Schema:
  """A copy of `schema` with TFDV's Jensen-Shannon drift comparator on the gated features."""
  result = copy.deepcopy(schema)
  features = {feature.name: feature for feature in result.feature}
  for name, threshold in thresholds(config).items():
    if name not in features:
      raise ValueError(f"drift gate: the schema has no feature {name!r} to compare")
    features[name].drift_comparator.jensen_shannon_divergence.threshold = threshold
  return result


def _comparison_only(anomalies: anomalies_pb2.Anomalies) -> anomalies_pb2.Anomalies:
  """`anomalies` without the reasons that do not come from comparing the two spans."""
  result = anomalies_pb2.Anomalies()
  result.CopyFrom(anomalies)
  for name in list(result.anomaly_info):
    info = result.anomaly_info[name]
    kept = [reason for reason in info.reason if reason.type in _COMPARISON_ANOMALY_TYPES]
    if not kept:
      del result.anomaly_info[name]
    elif len(kept) != len(info.reason):
      # The feature-level texts summarise every reason; rebuild them from the kept ones.
      del info.reason[:]
      info.reason.extend(kept)
      info.short_description = "; ".join(reason.short_description for reason in kept)
      info.description = " ".join(reason.description for reason in kept)
      info.ClearField("diff_regions")
  if result.HasField("dataset_anomaly_info"):
    kept = [reason for reason in result.dataset_anomaly_info.reason
            if reason.type in _COMPARISON_ANOMALY_TYPES]
    if kept:
      del result.dataset_anomaly_info.reason[:]
      result.dataset_anomaly_info.reason.extend(kept)
    else:
      result.ClearField("dataset_anomaly_info")
  result.ClearField("data_missing")
  return result


def _feature_name(path) -> str:
  return ".".join(path.step)


def compare(statistics: statistics_pb2.DatasetFeatureStatisticsList,
            baseline: statistics_pb2.DatasetFeatureStatisticsList,
            schema: schema_pb2.Schema,
            config: DriftConfig,
            baseline_name: str = "the previous span",
            ) -> Tuple[anomalies_pb2.Anomalies, Dict[str, Dict[str, Any]], List[str]]:
  """Runs TFDV's drift comparators; returns (comparison anomalies, per feature
  {jensen_shannon, threshold, drifted}, problems: one sentence per drifted or uncompared feature).
  """
  anomalies = _comparison_only(tfdv.validate_statistics(
      statistics, drift_schema(schema, config), previous_statistics=baseline))
  measured = {}
  for info in anomalies.drift_skew_info:
    for measurement in info.drift_measurements:
      if measurement.type == _JENSEN_SHANNON:
        measured[_feature_name(info.path)] = measurement.value
  features, problems = {}, []
  for name, threshold in thresholds(config).items():
    value = measured.get(name)
    info = anomalies.anomaly_info.get(name)
    drifted = info is not None or value is None
    features[name] = {"jensen_shannon": value, "threshold": threshold, "drifted": drifted}
    if value is None:
      reason = info.description if info is not None else "TFDV measured no divergence"
      problems.append(f"drift gate: feature {name!r} could not be compared with {baseline_name}"
                      f" ({reason})")
    elif drifted:
      problems.append(f"drift gate: feature {name!r} Jensen-Shannon divergence {value:.4f} > "
                      f"{threshold:g} against {baseline_name}")
  for name in sorted(set(anomalies.anomaly_info) - set(features)):
    problems.append(f"drift gate: feature {name!r} against {baseline_name}: "
                    f"{anomalies.anomaly_info[name].description}")
  if anomalies.HasField("dataset_anomaly_info"):
    problems.append(f"drift gate: dataset against {baseline_name}: "
                    f"{anomalies.dataset_anomaly_info.description}")
  return anomalies, features, problems


def _same_artifact(a: types.Artifact, b: types.Artifact) -> bool:
  return bool(a.id and a.id == b.id) or a.uri == b.uri


def select_baseline(current: types.Artifact,
                    candidates: Sequence[types.Artifact]) -> Optional[types.Artifact]:
  """The statistics of the span before `current`'s: among `candidates`, the ones of the largest
  span below the current span, and of those the newest (a span's data may be imported again)."""
  earlier = [candidate for candidate in candidates
             if not _same_artifact(candidate, current) and candidate.span < current.span]
  if not earlier:
    return None
  return max(earlier, key=lambda a: (a.span, a.mlmd_artifact.create_time_since_epoch, a.id))


def _load(artifact: types.Artifact) -> statistics_pb2.DatasetFeatureStatisticsList:
  splits = artifact_utils.decode_split_names(artifact.split_names)
  if SPLIT not in splits:
    raise ValueError(f"drift gate: statistics {artifact.uri} have no {SPLIT!r} split (they have "
                     f"{splits})")
  return stats_artifact_utils.load_statistics(artifact, SPLIT).proto()


class Executor(base_executor.BaseExecutor):
  """Compares the train split's statistics with the previous span's; stops the run on drift."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    config = DriftConfig.from_json(exec_properties[DRIFT_CONFIG_KEY])
    current = artifact_utils.get_single_instance(input_dict[STATISTICS_KEY])
    candidates = input_dict.get(BASELINE_STATISTICS_KEY) or []
    output = artifact_utils.get_single_instance(output_dict[ANOMALIES_KEY])
    output.split_names = artifact_utils.encode_split_names([SPLIT])
    output.span = current.span
    baseline = select_baseline(current, candidates)

    report: Dict[str, Any] = {
        "split": SPLIT, "span": current.span, "baseline": None,
        "num_baseline_candidates": len(candidates), "features": {}, "problems": [],
    }
    if baseline is None:
      anomalies = anomalies_pb2.Anomalies()
      report["passed"] = True
      report["message"] = (f"drift gate: no statistics of a span before span {current.span} among"
                           f" {len(candidates)} candidate(s); nothing to compare, the gate passes")
      blessed = NO_BASELINE_VALUE
    else:
      baseline_name = f"span {baseline.span}"
      schema = io_utils.SchemaReader().read(
          io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(input_dict[SCHEMA_KEY])))
      anomalies, features, problems = compare(_load(current), _load(baseline), schema, config,
                                              baseline_name)
      report.update(baseline={"span": baseline.span, "uri": baseline.uri, "id": baseline.id},
                    features=features, problems=problems, passed=not problems)
      report["message"] = ("; ".join(problems) if problems else
                           f"drift gate: span {current.span} against {baseline_name}: " + ", ".join(
                               f"{name} Jensen-Shannon divergence {f['jensen_shannon']:.4f} <= "
                               f"{f['threshold']:g}" for name, f in features.items()))
      blessed = NOT_BLESSED_VALUE if problems else BLESSED_VALUE
      output.set_int_custom_property(BASELINE_SPAN_PROPERTY, baseline.span)
      for name, feature in features.items():
        if feature["jensen_shannon"] is not None:
          output.set_float_custom_property(f"{name}_jensen_shannon", feature["jensen_shannon"])

    writer_utils.write_anomalies(
        os.path.join(artifact_utils.get_split_uri([output], SPLIT), SCHEMA_DIFF_FILE_NAME),
        anomalies)
    report_path = os.path.join(output.uri, REPORT_FILE_NAME)
    io_utils.write_string_file(report_path, json.dumps(report, indent=2, sort_keys=True))
    output.set_json_value_custom_property(BLESSED_PROPERTY, {SPLIT: blessed})
    logging.info("%s (report: %s)", report["message"], report_path)
    if not report["passed"]:
      raise DriftError(f"{report['message']} (report: {report_path})")
