"""DriftGate: real-MNIST spans through the executor's Do(), as StatisticsGen and SchemaGen lay
them out. A normal next span passes; a span of one digit or of inverted images stops the run."""

import json
import os
import re

import numpy as np
import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.drift_gate import DriftError
from components.drift_gate import DriftGate
from components.drift_gate import LatestStatisticsPerSpanStrategy
from components.drift_gate import executor
from core.config import DriftConfig
from core.config import IMAGE_KEY
from core.config import LABEL_KEY
from tests.support import drift_statistics

SPAN_SIZE = 1000
# What the pipeline passes: the configured thresholds.
CONFIG = DriftConfig()


@pytest.fixture(scope="module")
def spans():
  """Train-split statistics of two consecutive real spans and of drifted versions of the second."""
  images, labels = drift_statistics.mnist_train(2 * SPAN_SIZE)
  previous = (images[:SPAN_SIZE], labels[:SPAN_SIZE])
  current_images, current_labels = images[SPAN_SIZE:], labels[SPAN_SIZE:]
  threes = current_labels == 3
  variants = {
      "previous": previous,
      "normal": (current_images, current_labels),
      "one_digit": (current_images[threes], current_labels[threes]),
      "inverted": (255 - current_images, current_labels),
  }
  return {name: drift_statistics.statistics_of(*data) for name, data in variants.items()}


def _statistics(tmp_path, spans, name, span):
  return drift_statistics.statistics_artifact(
      str(tmp_path / f"statistics_{name}_{span}"), {"train": spans[name], "eval": spans[name]},
      span)


def _run(tmp_path, spans, current, baselines=(("previous", 1),), config=CONFIG, schema=None):
  """Runs Do() on span 2 holding `current` against candidates [(name, span)] (None: no baseline
  input); returns the output artifact, its report and the DriftError raised (or None)."""
  input_dict = {
      executor.STATISTICS_KEY: [_statistics(tmp_path, spans, current, 2)],
      executor.SCHEMA_KEY: [drift_statistics.schema_artifact(
          str(tmp_path / "schema"), drift_statistics.inferred_schema(spans["previous"])
          if schema is None else schema)],
  }
  if baselines is not None:
    input_dict[executor.BASELINE_STATISTICS_KEY] = [
        _statistics(tmp_path, spans, name, span) for name, span in baselines]
  output = standard_artifacts.ExampleAnomalies()
  output.uri = str(tmp_path / "anomalies")
  error = None
  try:
    executor.Executor().Do(input_dict, {executor.ANOMALIES_KEY: [output]},
                           {executor.DRIFT_CONFIG_KEY: config.to_json()})
  except DriftError as e:
    error = e
  with open(os.path.join(output.uri, executor.REPORT_FILE_NAME)) as f:
    report = json.load(f)
  return output, report, error


def _schema_diff(output) -> anomalies_pb2.Anomalies:
  anomalies = anomalies_pb2.Anomalies()
  path = os.path.join(artifact_utils.get_split_uri([output], "train"),
                      executor.SCHEMA_DIFF_FILE_NAME)
  with open(path, "rb") as f:
    anomalies.ParseFromString(f.read())
  return anomalies


def test_normal_next_span_passes_and_records_the_distances(tmp_path, spans):
  output, report, error = _run(tmp_path, spans, "normal")
  assert error is None
  assert report["passed"] and not report["problems"]
  assert report["baseline"]["span"] == 1 and report["span"] == 2
  for name in (LABEL_KEY, IMAGE_KEY):
    feature = report["features"][name]
    assert 0.0 <= feature["jensen_shannon"] < feature["threshold"] and not feature["drifted"]
  assert report["features"][LABEL_KEY]["threshold"] == CONFIG.label_max_jensen_shannon
  assert report["features"][IMAGE_KEY]["threshold"] == CONFIG.pixel_max_jensen_shannon
  assert output.get_json_value_custom_property(executor.BLESSED_PROPERTY) == {
      "train": executor.BLESSED_VALUE}
  assert output.get_int_custom_property(executor.BASELINE_SPAN_PROPERTY) == 1
  assert output.get_float_custom_property("label_jensen_shannon") == pytest.approx(
      report["features"][LABEL_KEY]["jensen_shannon"])
  # TFDV's own measurements, for tfdv.load_anomalies_binary and the TFX visualisations.
  diff = _schema_diff(output)
  assert not diff.anomaly_info
  assert {".".join(info.path.step) for info in diff.drift_skew_info} == {LABEL_KEY, IMAGE_KEY}
  assert artifact_utils.decode_split_names(output.split_names) == ["train"]
  assert output.span == 2


def test_span_of_one_digit_stops_naming_label(tmp_path, spans):
  output, report, error = _run(tmp_path, spans, "one_digit")
  threshold = re.escape(f"{CONFIG.label_max_jensen_shannon:g}")
  assert error is not None and re.search(
      rf"drift gate: feature 'label' Jensen-Shannon divergence 1\.0000 > {threshold} "
      rf"against span 1", str(error)), error
  assert "'image'" not in str(error)
  assert os.path.join(output.uri, executor.REPORT_FILE_NAME) in str(error)
  assert not report["passed"] and report["features"][LABEL_KEY]["drifted"]
  assert not report["features"][IMAGE_KEY]["drifted"]
  assert report["problems"] == [str(error).split(" (report: ")[0]]
  assert output.get_json_value_custom_property(executor.BLESSED_PROPERTY) == {
      "train": executor.NOT_BLESSED_VALUE}
  reasons = _schema_diff(output).anomaly_info[LABEL_KEY].reason
  assert [reason.type for reason in reasons] == [
      anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH]


def test_inverted_images_stop_naming_image(tmp_path, spans):
  _, report, error = _run(tmp_path, spans, "inverted")
  assert error is not None and re.search(
      r"feature 'image' Jensen-Shannon divergence 0\.4\d+ > [0-9.]+ against span 1",
      str(error)), error
  assert "'label'" not in str(error)
  assert report["features"][IMAGE_KEY]["drifted"] and not report["features"][LABEL_KEY]["drifted"]


# No baseline input; a resolver that found nothing; only a later span (a backfill of span 2).
@pytest.mark.parametrize("baselines", [None, (), (("previous", 3),)])
def test_without_an_earlier_span_it_passes_and_says_so(tmp_path, spans, baselines):
  output, report, error = _run(tmp_path, spans, "inverted", baselines=baselines)
  assert error is None
  assert report["passed"] and report["baseline"] is None
  assert "no statistics of a span before span 2" in report["message"]
  assert "the gate passes" in report["message"]
  assert output.get_json_value_custom_property(executor.BLESSED_PROPERTY) == {
      "train": executor.NO_BASELINE_VALUE}
  assert not _schema_diff(output).anomaly_info


def test_it_compares_with_the_largest_earlier_span(tmp_path, spans):
  _, report, error = _run(tmp_path, spans, "normal",
                          baselines=(("inverted", 0), ("previous", 1), ("one_digit", 3)))
  assert error is None and report["baseline"]["span"] == 1


def test_thresholds_come_from_the_drift_config(tmp_path, spans):
  strict = DriftConfig(label_max_jensen_shannon=0.0, pixel_max_jensen_shannon=1.0)
  _, _, error = _run(tmp_path, spans, "normal", config=strict)
  assert error is not None and re.search(r"feature 'label' .* > 0 against span 1", str(error))
  assert "'image'" not in str(error)


def test_schema_violations_are_left_to_example_validator(tmp_path, spans):
  schema = drift_statistics.inferred_schema(spans["previous"])
  label = next(feature for feature in schema.feature if feature.name == LABEL_KEY)
  label.int_domain.min, label.int_domain.max = 0, 5  # digits 6-9 violate it
  _, report, error = _run(tmp_path, spans, "normal", schema=schema)
  assert error is None and report["passed"]


def test_schema_without_a_gated_feature_is_an_error(spans):
  schema = drift_statistics.inferred_schema(spans["previous"])
  del schema.feature[:]
  with pytest.raises(ValueError, match="no feature 'label'"):
    executor.drift_schema(schema, CONFIG)


def _stats_artifact(artifact_id, span, create_time=0):
  artifact = standard_artifacts.ExampleStatistics()
  artifact.id = artifact_id
  artifact.uri = f"/statistics/{artifact_id}"
  artifact.span = span
  artifact.mlmd_artifact.create_time_since_epoch = create_time or artifact_id
  return artifact


def test_the_baseline_is_the_newest_statistics_of_the_largest_earlier_span():
  current = _stats_artifact(10, span=4)
  candidates = [_stats_artifact(1, 1), _stats_artifact(2, 3), _stats_artifact(5, 3),
                _stats_artifact(3, 3, create_time=1), current, _stats_artifact(7, 4),
                _stats_artifact(8, 6)]
  assert executor.select_baseline(current, candidates).id == 5
  assert executor.select_baseline(_stats_artifact(11, span=1), candidates) is None


def test_strategy_resolves_the_newest_statistics_of_each_span():
  artifacts = [_stats_artifact(1, 1), _stats_artifact(4, 2), _stats_artifact(2, 2),
               _stats_artifact(6, 0), _stats_artifact(3, 1, create_time=9)]
  result = LatestStatisticsPerSpanStrategy().resolve_artifacts(None, {"statistics": artifacts})
  assert [(a.span, a.id) for a in result["statistics"]] == [(0, 6), (1, 3), (2, 4)]
  assert LatestStatisticsPerSpanStrategy().resolve_artifacts(None, {"statistics": []}) == {
      "statistics": []}


def test_with_the_current_statistics_only_earlier_spans_resolve():
  # Whether this run's own statistics are recorded yet or not, the candidates are the same: a
  # rerun gives the gate its old inputs.
  current = _stats_artifact(9, span=2)
  earlier = [_stats_artifact(1, 1), _stats_artifact(6, 0), _stats_artifact(4, 2)]
  for candidates in (earlier, earlier + [current]):
    result = LatestStatisticsPerSpanStrategy().resolve_artifacts(
        None, {"statistics": candidates, "current": [current]})
    assert [(a.span, a.id) for a in result["statistics"]] == [(0, 6), (1, 1)]
    assert result["current"] == [current]


def test_component_passes_the_config_as_json():
  statistics = types.Channel(type=standard_artifacts.ExampleStatistics)
  schema = types.Channel(type=standard_artifacts.Schema)
  config = DriftConfig(label_max_jensen_shannon=0.03, pixel_max_jensen_shannon=0.02)
  gate = DriftGate(statistics=statistics, schema=schema, drift_config=config)
  assert DriftConfig.from_json(gate.exec_properties[executor.DRIFT_CONFIG_KEY]) == config
  assert gate.outputs[executor.ANOMALIES_KEY].type == standard_artifacts.ExampleAnomalies
  assert np.isclose(executor.thresholds(config)[IMAGE_KEY], 0.02)
