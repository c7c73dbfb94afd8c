"""Scheduled retraining, for real: pipeline.retrain on the smoke profile over tiny spans that
arrive one by one. One scenario, in order: span 1 cold, a rerun with nothing new, span 2 warm,
a deliberately worse candidate, a drifted span 3, a span that does not exist, and a backlog span
read without training."""

import dataclasses

import pytest

from components.atomic_pusher import filesystem
from components.mnist_example_gen import idx
from core import config as config_lib
from pipeline import retrain
from pipeline import spans
from tests.support import spans as spans_support

pytestmark = pytest.mark.slow


def _serving_digest(serving_dir: str) -> str:
  """Every file under the serving dir, names and bytes: what TF Serving could see."""
  return filesystem.model_digest(serving_dir)


def _add_span(data_root: str, work_dir: str, train_start: int, transform=None) -> None:
  """Appends embedded MNIST train images [train_start, +64) as the next span, optionally with
  their pixels or labels changed by `transform(images, labels)`."""
  folder = spans_support.mnist_folder(work_dir, train_start)
  if transform is not None:
    images, labels = transform(*idx.load_split(folder, "train"))
    names = idx.write_split(folder, "train", images, labels)
    names += ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    idx.write_checksums(folder, names)
  spans.add(folder, data_root)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
  root = tmp_path_factory.mktemp("retrain")
  data_root = str(root / "data")
  spans_support.tiny_spans(data_root, 1)
  smoke = config_lib.profile("smoke")
  config = dataclasses.replace(
      smoke, data=dataclasses.replace(smoke.data, data_dir=data_root),
      # Spans of 64 images: their label mixes differ by chance far more than real spans'
      # (docs/design.md#drift-gate), so the gate gets thresholds for that size.
      drift=config_lib.DriftConfig(label_max_jensen_shannon=0.3, pixel_max_jensen_shannon=0.1),
      pipeline_root=str(root / "pipeline_root"), serving_dir=str(root / "serving_model"))
  results = {"first": retrain.retrain(config)}
  results["after_first"] = _serving_digest(config.serving_dir)
  results["rerun"] = retrain.retrain(config)
  results["after_rerun"] = _serving_digest(config.serving_dir)

  _add_span(data_root, str(root / "span2"), train_start=64)
  results["second"] = retrain.retrain(config)
  results["after_second"] = _serving_digest(config.serving_dir)

  # A deliberately worse candidate on the same data: one step from scratch.
  worse = dataclasses.replace(config, train=dataclasses.replace(
      config.train, warm_start=False, train_steps=1))
  results["worse"] = retrain.retrain(worse)
  results["after_worse"] = _serving_digest(config.serving_dir)

  _add_span(data_root, str(root / "span3"), train_start=128,
            transform=lambda images, labels: (255 - images, labels))
  results["drifted"] = retrain.retrain(config)
  results["after_drifted"] = _serving_digest(config.serving_dir)

  missing = dataclasses.replace(config, data=dataclasses.replace(config.data, span=9))
  results["missing"] = retrain.retrain(missing)

  # A backlog span read without training: it joins later runs' window.
  _add_span(data_root, str(root / "span4"), train_start=192)
  backlog = dataclasses.replace(config, data=dataclasses.replace(config.data, span=4))
  results["ingested"] = retrain.retrain(backlog, ingest_only=True)
  results["after_ingested"] = _serving_digest(config.serving_dir)
  return results


def test_the_first_span_trains_cold_and_pushes(scenario):
  first = scenario["first"]
  assert first["outcome"] == "pushed", first
  assert (first["span"], first["window"], first["start"]) == (1, [1], "cold")
  assert first["blessed"] is True and first["pushed_version"]


def test_a_rerun_with_nothing_new_runs_nothing_and_pushes_nothing(scenario):
  rerun = scenario["rerun"]
  assert rerun["outcome"] == "nothing_new", rerun
  assert retrain.EXIT_CODES["nothing_new"] == 3
  assert scenario["after_rerun"] == scenario["after_first"]


def test_a_new_span_trains_warm_on_the_window_and_pushes_as_its_metrics_say(scenario):
  second = scenario["second"]
  assert (second["span"], second["window"], second["start"]) == (2, [1, 2], "warm"), second
  assert second["start_reason"].endswith("Format-Serving")  # the base model, in lineage too
  assert second["outcome"] in ("pushed", "not_blessed")
  if second["outcome"] == "pushed":
    assert second["blessed"] and scenario["after_second"] != scenario["after_rerun"]
  else:
    assert not second["blessed"] and scenario["after_second"] == scenario["after_rerun"]


def test_a_worse_candidate_is_not_blessed_and_the_serving_dir_is_untouched(scenario):
  worse = scenario["worse"]
  assert worse["outcome"] == "not_blessed", worse
  assert worse["start"] == "cold" and worse["blessed"] is False
  assert retrain.EXIT_CODES["not_blessed"] == 4
  assert scenario["after_worse"] == scenario["after_second"]


def test_a_drifted_span_stops_the_run_and_names_the_feature(scenario):
  drifted = scenario["drifted"]
  assert drifted["outcome"] == "failed", drifted
  assert "drift gate: feature 'image'" in drifted["error"]
  assert drifted.get("trainer") is None  # stopped before Transform: no Trainer ran
  assert scenario["after_drifted"] == scenario["after_worse"]


def test_a_span_that_does_not_exist_is_refused_with_its_name(scenario):
  missing = scenario["missing"]
  assert missing["outcome"] == "bad_input"
  assert "Span 9 not found" in missing["error"]


def test_ingest_only_reads_a_span_and_trains_nothing(scenario):
  ingested = scenario["ingested"]
  assert ingested == {"outcome": "ingested", "span": 4, "profile": "smoke"}
  assert retrain.EXIT_CODES["ingested"] == 0
  assert scenario["after_ingested"] == scenario["after_drifted"]
