"""Runs the DiffusionEvaluator's executor on fake models and a tiny Examples artifact."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.evaluator import constants
from tfx.types import standard_artifacts

from components.diffusion_evaluator import DiffusionEvaluator
from components.diffusion_evaluator import executor
from tests.support import evaluator
from tests.support import fake_models
from core.config import EvalConfig
from core.config import SamplerConfig
from core.config import LABEL_KEY

# Few images, few samples: the fakes agree with each other, so thresholds decide the outcome.
# TFMA is off here (it costs tens of seconds a run); test_tfma_denoising_* turns it on.
_CONFIG = EvalConfig(denoise_curve_sigmas=(0.2, 0.4), denoise_curve_num_images=10,
                     samples_per_class=3, grid_seeds=2, batch_size=8,
                     min_psnr=0.0, min_class_agreement=0.9, tfma_denoising=False)


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
  root = tmp_path_factory.mktemp("fakes")
  return {
      "examples": fake_models.write_fake_examples(str(root / "examples"), num_train=40,
                                                  num_eval=20),
      "classifier": fake_models.model_artifact(
          fake_models.save_fake_classifier(str(root / "classifier")), 1),
      # "blur" scores a higher PSNR than "identity" on the fake data.
      "good": fake_models.model_artifact(
          fake_models.save_fake_diffusion_model(str(root / "good"), denoiser="blur"), 2),
      "bad": fake_models.model_artifact(
          fake_models.save_fake_diffusion_model(str(root / "bad"), denoiser="identity"), 3),
      # "good" exported with a guidance interval, as the current exporter writes it.
      "interval": fake_models.model_artifact(
          fake_models.save_fake_diffusion_model(str(root / "interval"), denoiser="blur",
                                                guidance_sigma_interval=(1.0, float("inf"))), 4),
  }


def _run(tmp_path, fakes, candidate, config=_CONFIG, baseline=None, beam_pipeline_args=None):
  return evaluator.run_executor(tmp_path, fakes, candidate, config, baseline, beam_pipeline_args)


def _blessed(blessing):
  value = blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY)
  has_file = os.path.exists(os.path.join(blessing.uri, constants.BLESSED_FILE_NAME))
  has_not_file = os.path.exists(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME))
  assert has_file != has_not_file and has_file == (value == constants.BLESSED_VALUE)
  return value == constants.BLESSED_VALUE


def test_blessed_run_writes_all_outputs(tmp_path, fakes):
  results, evaluation, blessing = _run(tmp_path, fakes, fakes["good"])

  for name in (executor.METRICS_FILE_NAME, executor.SAMPLE_GRID_FILE_NAME,
               executor.REPORT_FILE_NAME):
    assert os.path.getsize(os.path.join(evaluation.uri, name)) > 0
  assert set(results) == {"candidate", "baseline", "reference", "blessing", "eval_config",
                          "models", "data"}
  candidate = results["candidate"]
  assert set(candidate) == {"denoising", "denoising_curve", "sampling", "class_agreement",
                            "judge_accuracy_on_eval", "frechet", "timings_s"}
  denoising = candidate["denoising"]
  assert denoising["num_images"] == 20 and denoising["sigma"] == 0.4
  assert 0.0 < denoising["mse"] < 0.2
  assert denoising["rmse"] == pytest.approx(denoising["mse"] ** 0.5)
  assert 5.0 < denoising["psnr"] < 40.0
  curve = candidate["denoising_curve"]
  assert [point["sigma"] for point in curve] == [0.2, 0.4]
  assert all(point["num_images"] == 10 for point in curve)
  assert curve[0]["psnr"] > curve[1]["psnr"]  # more noise, worse reconstruction
  agreement = candidate["class_agreement"]
  assert agreement["overall"] == 1.0 and agreement["num_samples"] == 30
  assert agreement["per_class"] == [1.0] * 10
  # The judge on the floor's real eval images, against their true labels: the fakes agree.
  judge_accuracy = candidate["judge_accuracy_on_eval"]
  assert judge_accuracy["overall"] == 1.0 and judge_accuracy["num_samples"] == 20
  frechet = candidate["frechet"]
  assert frechet["num_images"] == 20  # capped by the 20 eval images
  assert frechet["distance"] >= 0.0 and frechet["real_floor"] > 0.0
  assert frechet["ratio"] == pytest.approx(frechet["distance"] / frechet["real_floor"])
  assert results["baseline"] is None and results["models"]["baseline"] is None
  assert results["reference"]["psnr"] == 21.92
  assert EvalConfig.from_dict(results["eval_config"]) == _CONFIG
  assert results["models"]["candidate"] == {"uri": fakes["good"].uri, "id": 2}

  assert results["blessing"]["blessed"] and _blessed(blessing)
  assert blessing.get_string_custom_property(
      constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY) == fakes["good"].uri
  assert blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY) == 2
  assert not blessing.has_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY)
  assert evaluation.get_float_custom_property("psnr") == pytest.approx(denoising["psnr"])
  assert evaluation.get_float_custom_property("class_agreement") == 1.0

  with open(os.path.join(evaluation.uri, executor.REPORT_FILE_NAME)) as f:
    markdown = f.read()
  assert "**BLESSED**" in markdown and "21.92" in markdown and "sample_grid.png" in markdown
  assert "| judge on real eval images (1.000 overall) |" in markdown


@pytest.mark.slow
def test_tfma_denoising_writes_per_digit_slices_equal_to_the_numpy_numbers(tmp_path, fakes):
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  numpy_results, _, _ = _run(tmp_path / "numpy", fakes, fakes["good"])
  config = EvalConfig.from_dict({**_CONFIG.to_dict(), "tfma_denoising": True})
  results, evaluation, blessing = _run(tmp_path, fakes, fakes["good"], config=config)

  candidate = results["candidate"]
  denoising, tfma_denoising = candidate["denoising"], candidate["tfma_denoising"]
  assert tfma_denoising["sigma"] == 0.4 and tfma_denoising["num_images"] == 20
  # Computed once, by TFMA's Beam pipeline: the blessing's numbers are its overall slice, equal
  # to the numpy path's (tfma off) within float tolerance.
  numpy_denoising = numpy_results["candidate"]["denoising"]
  for key in ("mse", "rmse", "psnr"):
    assert denoising[key] == tfma_denoising["overall"][key]
    assert denoising[key] == pytest.approx(numpy_denoising[key], rel=1e-5)
  assert denoising["num_images"] == tfma_denoising["overall"]["num_images"] == 20
  assert "denoising" not in candidate["timings_s"]  # the numpy pass did not run
  assert not os.path.exists(os.path.join(evaluation.uri, executor.TFMA_WORK_DIR_NAME))
  per_class = tfma_denoising["per_class"]
  assert list(per_class) == [str(digit) for digit in range(10)]
  assert all(values["num_images"] == 2 for values in per_class.values())
  tfma_dir = os.path.join(evaluation.uri, executor.TFMA_DIR_NAME)
  assert tfma_denoising["output_path"] == tfma_dir
  loaded = tfma.load_eval_result(tfma_dir)
  assert loaded.get_metrics_for_slice()["psnr"]["doubleValue"] == pytest.approx(
      tfma_denoising["overall"]["psnr"])
  assert candidate["timings_s"]["tfma_denoising"] > 0
  assert _blessed(blessing)
  assert evaluation.get_float_custom_property("psnr") == pytest.approx(denoising["psnr"])

  with open(os.path.join(evaluation.uri, executor.REPORT_FILE_NAME)) as f:
    markdown = f.read()
  assert "Denoising per digit (TFMA" in markdown
  assert f"| PSNR (dB) | {per_class['0']['psnr']:.2f} |" in markdown


def test_high_min_psnr_is_not_blessed(tmp_path, fakes):
  config = EvalConfig.from_dict({**_CONFIG.to_dict(), "min_psnr": 99.0})
  results, _, blessing = _run(tmp_path, fakes, fakes["good"], config=config)
  assert not results["blessing"]["blessed"] and not _blessed(blessing)
  assert any(reason.startswith("FAIL: psnr") for reason in results["blessing"]["reasons"])


def test_worse_candidate_than_baseline_is_not_blessed(tmp_path, fakes):
  results, _, blessing = _run(tmp_path, fakes, fakes["bad"], baseline=fakes["good"])
  assert results["candidate"]["denoising"]["psnr"] < results["baseline"]["denoising"]["psnr"]
  assert not _blessed(blessing)
  assert any("FAIL" in reason and "baseline" in reason
             for reason in results["blessing"]["reasons"])
  assert blessing.get_string_custom_property(
      constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY) == fakes["good"].uri
  assert blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY) == 2
  assert results["models"]["baseline"]["same_as_candidate"] is False
  assert not blessing.has_custom_property(executor.FORCE_BLESS_REASON_PROPERTY)


def test_force_bless_passes_a_worse_candidate_and_records_why(tmp_path, fakes):
  config = dataclasses.replace(_CONFIG, force_bless_reason="baseline scored on stale data")
  results, evaluation, blessing = _run(tmp_path, fakes, fakes["bad"], config=config,
                                       baseline=fakes["good"])
  assert _blessed(blessing)
  assert blessing.get_string_custom_property(executor.FORCE_BLESS_REASON_PROPERTY).endswith(
      "baseline scored on stale data")
  assert any(reason.startswith("FAIL") for reason in results["blessing"]["reasons"])
  with open(os.path.join(evaluation.uri, executor.REPORT_FILE_NAME)) as f:
    assert "force-blessed past the baseline comparison: baseline scored on stale data" in f.read()


def test_force_bless_never_overrides_the_absolute_thresholds(tmp_path, fakes):
  config = dataclasses.replace(_CONFIG, min_psnr=99.0, force_bless_reason="anyway")
  results, _, blessing = _run(tmp_path, fakes, fakes["bad"], config=config,
                              baseline=fakes["good"])
  assert not _blessed(blessing)
  assert not blessing.has_custom_property(executor.FORCE_BLESS_REASON_PROPERTY)


def test_baseline_same_as_candidate_reuses_metrics_and_blesses(tmp_path, fakes):
  results, _, blessing = _run(tmp_path, fakes, fakes["good"], baseline=fakes["good"])
  assert results["models"]["baseline"]["same_as_candidate"] is True
  assert results["baseline"] == results["candidate"]
  assert _blessed(blessing)
  assert blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY) == 2


def test_metrics_record_each_models_export_time_sampler_and_say_when_they_differ(tmp_path, fakes):
  results, evaluation, blessing = _run(tmp_path, fakes, fakes["interval"], baseline=fakes["good"])
  candidate, baseline = results["candidate"]["sampling"], results["baseline"]["sampling"]
  assert candidate["sampler"] == "ddim" and candidate["guidance_sigma_interval"] == [1.0, None]
  assert baseline["sampler"] == "ddim" and baseline["guidance_sigma_interval"] == [0.0, None]
  # Each model samples at the defaults it records; a difference is stated, not held against one.
  assert candidate["num_steps"] == baseline["num_steps"] == SamplerConfig().num_steps
  assert candidate["guidance_scale"] == pytest.approx(SamplerConfig().guidance_scale)
  assert _blessed(blessing)
  notes = [r for r in results["blessing"]["reasons"] if "ddim, guidance at sigma >= 1" in r]
  assert len(notes) == 1 and notes[0].startswith("ok: ") and "ddim, guidance at every step" in notes[0]
  with open(os.path.join(evaluation.uri, executor.REPORT_FILE_NAME)) as f:
    assert ("| sampler (fixed at export) | ddim, guidance at sigma >= 1 "
            "| ddim, guidance at every step") in f.read()


def test_read_split_does_not_depend_on_the_order_example_gen_wrote(tmp_path):
  # ExampleGen reshuffles records as it writes them; subsets taken by position must not move.
  as_written = fake_models.write_fake_examples(str(tmp_path / "a"), num_train=30, num_eval=20)
  reshuffled = fake_models.write_fake_examples(str(tmp_path / "b"), num_train=30, num_eval=20,
                                               record_order_seed=1)
  raw_labels = [
      [tf.train.Example.FromString(record).features.feature[LABEL_KEY].int64_list.value[0]
       for record in tf.data.TFRecordDataset(
           os.path.join(examples.uri, "Split-eval", "data_tfrecord-00000-of-00001.gz"),
           compression_type="GZIP").as_numpy_iterator()]
      for examples in (as_written, reshuffled)]
  assert raw_labels[0] != raw_labels[1]
  for split in ("train", "eval"):
    for limit in (None, 7):
      images_a, labels_a = executor.read_split([as_written], split, limit)
      images_b, labels_b = executor.read_split([reshuffled], split, limit)
      np.testing.assert_array_equal(images_a, images_b)
      np.testing.assert_array_equal(labels_a, labels_b)
      assert len(labels_a) == (limit or (30 if split == "train" else 20))
      assert images_a.dtype == np.float32 and 0.0 <= images_a.min() and images_a.max() <= 1.0


def test_component_wires_channels_and_config(fakes):
  from tfx import types  # pylint: disable=g-import-not-at-top
  from tfx.types import channel_utils  # pylint: disable=g-import-not-at-top

  def channel(artifact_type):
    return channel_utils.as_channel([artifact_type()])

  component = DiffusionEvaluator(
      examples=channel(standard_artifacts.Examples),
      model=channel(standard_artifacts.Model),
      classifier_model=channel(standard_artifacts.Model),
      eval_config=_CONFIG,
      baseline_model=channel(standard_artifacts.Model))
  assert EvalConfig.from_json(component.exec_properties["eval_config"]) == _CONFIG
  assert set(component.outputs) == {"evaluation", "blessing"}
  assert component.outputs["blessing"].type == standard_artifacts.ModelBlessing
  assert isinstance(component.outputs["evaluation"], types.BaseChannel)
  # The baseline is optional.
  DiffusionEvaluator(examples=channel(standard_artifacts.Examples),
                     model=channel(standard_artifacts.Model),
                     classifier_model=channel(standard_artifacts.Model), eval_config=_CONFIG)


@pytest.mark.slow
def test_beam_stage_gives_the_same_numbers_in_memory_and_on_two_worker_processes(tmp_path, fakes):
  """The component's beam_pipeline_args choose TFMA's runner; the numbers do not depend on it."""
  config = EvalConfig.from_dict({**_CONFIG.to_dict(), "tfma_denoising": True})
  in_memory, _, _ = _run(tmp_path / "in_memory", fakes, fakes["good"], config=config,
                         beam_pipeline_args=["--runner=DirectRunner",
                                             "--direct_running_mode=in_memory",
                                             "--direct_num_workers=1"])
  multi_process, _, _ = _run(tmp_path / "multi_process", fakes, fakes["good"], config=config,
                             beam_pipeline_args=["--runner=DirectRunner",
                                                 "--direct_running_mode=multi_processing",
                                                 "--direct_num_workers=2"])
  a, b = in_memory["candidate"], multi_process["candidate"]
  for key in ("mse", "rmse", "psnr"):
    assert b["denoising"][key] == pytest.approx(a["denoising"][key], rel=1e-6)
  assert b["denoising"]["num_images"] == a["denoising"]["num_images"] == 20
  for digit, values in a["tfma_denoising"]["per_class"].items():
    other = b["tfma_denoising"]["per_class"][digit]
    assert other["num_images"] == values["num_images"]
    assert other["psnr"] == pytest.approx(values["psnr"], rel=1e-6)
  assert in_memory["blessing"] == multi_process["blessing"]
