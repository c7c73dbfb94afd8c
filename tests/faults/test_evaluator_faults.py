"""The DiffusionEvaluator given a NaN candidate or a damaged baseline, through its executor's Do().

A candidate whose outputs are NaN is not blessed and the blessing says which metrics were not
finite. A baseline that cannot be loaded or scored (its directory gone, its variables gone, its
saved_model.pb truncated, or its outputs NaN) is named in the report, metrics.json and the
blessing (`baseline_unreadable`), and the candidate is judged on the absolute thresholds alone.
"""

import dataclasses
import os
import shutil

import numpy as np
import pytest
from tfx.components.evaluator import constants
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.diffusion_evaluator import executor
from core.config import EvalConfig
from tests.support import evaluator
from tests.support import fake_models
from tests.support import tiny_models
from trainer_module import export

# TFMA is off: these tests are about decisions, test_tfma_denoising.py covers TFMA.
_CONFIG = EvalConfig(denoise_curve_sigmas=(0.2, 0.4), denoise_curve_num_images=10,
                     samples_per_class=2, grid_seeds=2, batch_size=8,
                     min_psnr=0.0, min_class_agreement=0.9, tfma_denoising=False)


def _save_nan_model(model_uri: str) -> str:
  """The seeded tiny U-Net with one weight of its first layer NaN, exported as the Trainer does:
  every image it denoises or samples is NaN."""
  model = tiny_models.seeded_tiny_unet(seed=0)
  weight = sorted(model.weights, key=lambda w: w.name)[0]
  weight.assign(np.full(weight.shape, np.nan, weight.dtype.as_numpy_dtype))
  # One network copy traces in half the time; batches of 8 as _CONFIG asks.
  sampler = dataclasses.replace(tiny_models.TINY_SAMPLER, network_copies=1, max_batch=8,
                                max_rows_per_call=None)
  export.export_sampler(model, tiny_models.TINY_DIFFUSION, sampler,
                        path_utils.serving_model_path(model_uri), tiny_models.TINY_UNET)
  return model_uri


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
  root = tmp_path_factory.mktemp("fakes")
  return {
      "root": root,
      "examples": fake_models.write_fake_examples(str(root / "examples"), num_train=40,
                                                  num_eval=20),
      "classifier": fake_models.model_artifact(
          fake_models.save_fake_classifier(str(root / "classifier")), 1),
      "good": fake_models.model_artifact(
          fake_models.save_fake_diffusion_model(str(root / "good"), denoiser="blur"), 2),
      "nan": fake_models.model_artifact(_save_nan_model(str(root / "nan")), 3),
  }


def _run(tmp_path, fakes, candidate, baseline=None, config=_CONFIG):
  results, evaluation, blessing = evaluator.run_executor(tmp_path, fakes, candidate, config,
                                                         baseline)
  with open(os.path.join(evaluation.uri, executor.REPORT_FILE_NAME)) as f:
    markdown = f.read()
  return results, markdown, blessing


def _blessed(blessing) -> bool:
  value = blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY)
  has_file = os.path.exists(os.path.join(blessing.uri, constants.BLESSED_FILE_NAME))
  has_not_file = os.path.exists(os.path.join(blessing.uri, constants.NOT_BLESSED_FILE_NAME))
  assert has_file != has_not_file and has_file == (value == constants.BLESSED_VALUE)
  return value == constants.BLESSED_VALUE


def _message(blessing) -> str:
  return blessing.get_string_custom_property(constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY)


def _damaged_copy(fakes, tmp_path, damage: str) -> standard_artifacts.Model:
  """A copy of the good model (a blessed baseline) with `damage` done to its files."""
  uri = str(tmp_path / "baseline")
  shutil.copytree(fakes["good"].uri, uri)
  saved_model_dir = path_utils.serving_model_path(uri)
  if damage == "missing_dir":
    shutil.rmtree(uri)
  elif damage == "missing_variables":
    shutil.rmtree(os.path.join(saved_model_dir, "variables"))
  elif damage == "truncated_saved_model_pb":
    path = os.path.join(saved_model_dir, "saved_model.pb")
    with open(path, "rb") as f:
      content = f.read()
    with open(path, "wb") as f:
      f.write(content[:len(content) // 3])
  else:
    raise ValueError(damage)
  return fake_models.model_artifact(uri, 7)


# A NaN candidate.


def test_nan_candidate_is_not_blessed_and_the_blessing_names_the_non_finite_metrics(
    tmp_path, fakes):
  # min_class_agreement 0: the thresholds alone would let anything through, as on smoke.
  config = EvalConfig.from_dict({**_CONFIG.to_dict(), "min_class_agreement": 0.0})
  results, markdown, blessing = _run(tmp_path, fakes, fakes["nan"], config=config)

  assert not _blessed(blessing) and not results["blessing"]["blessed"]
  reasons = results["blessing"]["reasons"]
  non_finite = [reason for reason in reasons if "non-finite metrics" in reason]
  assert len(non_finite) == 1 and non_finite[0].startswith("FAIL: ")
  assert "psnr=nan" in non_finite[0] and "mse=nan" in non_finite[0]
  assert "non-finite metrics: psnr=nan" in _message(blessing)
  assert "FAIL: non-finite metrics: psnr=nan" in markdown
  # metrics.json stays strict JSON: the NaNs are written as null.
  assert results["candidate"]["denoising"]["psnr"] is None


@pytest.mark.slow
def test_nan_candidate_through_tfmas_beam_pipeline_is_not_blessed(tmp_path, fakes):
  """As the profiles run it: the reference protocol's numbers from TFMA's Beam pipeline."""
  config = EvalConfig.from_dict({**_CONFIG.to_dict(), "min_class_agreement": 0.0,
                                 "tfma_denoising": True})
  results, _, blessing = _run(tmp_path, fakes, fakes["nan"], config=config)
  assert not _blessed(blessing)
  assert "non-finite metrics: psnr=nan, mse=nan, rmse=nan" in _message(blessing)
  assert results["candidate"]["tfma_denoising"]["overall"]["psnr"] is None  # NaN, as null


def test_force_bless_never_blesses_a_nan_candidate(tmp_path, fakes):
  config = EvalConfig.from_dict({**_CONFIG.to_dict(), "min_class_agreement": 0.0,
                                 "force_bless_reason": "anyway"})
  results, _, blessing = _run(tmp_path, fakes, fakes["nan"], baseline=fakes["good"],
                              config=config)
  assert not _blessed(blessing)
  assert not blessing.has_custom_property(executor.FORCE_BLESS_REASON_PROPERTY)
  assert any("non-finite metrics" in reason for reason in results["blessing"]["reasons"])


# A damaged baseline: judged on the absolute thresholds, and said so.


@pytest.mark.parametrize("damage", ["missing_dir", "missing_variables",
                                    "truncated_saved_model_pb"])
def test_unreadable_baseline_falls_back_to_absolute_thresholds_and_says_so(
    tmp_path, fakes, damage):
  baseline = _damaged_copy(fakes, tmp_path, damage)
  results, markdown, blessing = _run(tmp_path, fakes, fakes["good"], baseline=baseline)

  assert _blessed(blessing)
  unreadable = blessing.get_string_custom_property(executor.BASELINE_UNREADABLE_PROPERTY)
  assert unreadable and baseline.uri in unreadable
  assert results["baseline"] is None
  assert results["models"]["baseline"]["unreadable"] == unreadable
  reasons = results["blessing"]["reasons"]
  assert any(reason.startswith("ok: baseline_unreadable: ") and
             "absolute thresholds only, not compared with the baseline" in reason
             for reason in reasons)
  assert not any("baseline" in reason and ">=" in reason for reason in reasons)  # no comparison
  assert "baseline_unreadable: " in _message(blessing)
  assert "baseline_unreadable: " in markdown
  # The baseline tried is still recorded, as TFX's Evaluator records it.
  assert blessing.get_int_custom_property(
      constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY) == 7


def test_nan_baseline_falls_back_to_absolute_thresholds_and_says_so(tmp_path, fakes):
  results, _, blessing = _run(tmp_path, fakes, fakes["good"], baseline=fakes["nan"])
  assert _blessed(blessing)
  unreadable = blessing.get_string_custom_property(executor.BASELINE_UNREADABLE_PROPERTY)
  assert "non-finite metrics: psnr=nan" in unreadable
  assert results["baseline"] is None
  assert not any("baseline" in reason and ">=" in reason
                 for reason in results["blessing"]["reasons"])


def test_unreadable_baseline_never_blesses_a_candidate_below_the_thresholds(tmp_path, fakes):
  baseline = _damaged_copy(fakes, tmp_path, "truncated_saved_model_pb")
  config = EvalConfig.from_dict({**_CONFIG.to_dict(), "min_psnr": 99.0})
  results, _, blessing = _run(tmp_path, fakes, fakes["good"], baseline=baseline, config=config)
  assert not _blessed(blessing)
  assert blessing.get_string_custom_property(executor.BASELINE_UNREADABLE_PROPERTY)
  assert any(reason.startswith("FAIL: psnr") for reason in results["blessing"]["reasons"])
