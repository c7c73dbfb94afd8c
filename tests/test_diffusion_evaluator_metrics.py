"""Unit tests of components/diffusion_evaluator/metrics.py and its report helpers (no TFX run)."""

import dataclasses
import math

import numpy as np
import pytest

from components.diffusion_evaluator import metrics
from components.diffusion_evaluator import report
from core.config import EvalConfig


def _images(count=4, seed=0):
  return np.random.default_rng(seed).uniform(0.2, 0.8, (count, 28, 28, 1)).astype(np.float32)


def test_constant_error_gives_known_mse_rmse_psnr():
  clean = _images()
  result = metrics.denoising_metrics(clean, clean + 0.1)
  assert result["mse"] == pytest.approx(0.01, rel=1e-4)
  assert result["rmse"] == pytest.approx(0.1, rel=1e-4)
  assert result["psnr"] == pytest.approx(20.0, abs=1e-3)
  assert result["num_images"] == 4


def test_psnr_is_mean_of_per_image_psnr():
  clean = _images(2)
  denoised = clean.copy()
  denoised[0] += 0.1  # 20 dB
  denoised[1] += 0.01  # 40 dB
  result = metrics.denoising_metrics(clean, denoised)
  assert result["psnr"] == pytest.approx(30.0, abs=1e-2)
  # PSNR of the mean MSE would be lower (Jensen): the reference reports the per-image mean.
  assert result["psnr"] > 10 * math.log10(1.0 / result["mse"])


def test_identical_images_psnr_is_capped_not_infinite():
  clean = _images()
  result = metrics.denoising_metrics(clean, clean)
  assert result["mse"] == 0.0
  assert result["psnr"] == metrics.PSNR_CAP_DB


def test_denoising_metrics_rejects_shape_mismatch():
  with pytest.raises(ValueError):
    metrics.denoising_metrics(_images(2), _images(3))


def test_reference_numbers_are_consistent():
  assert metrics.REFERENCE_RMSE == pytest.approx(math.sqrt(metrics.REFERENCE_MSE), abs=1e-4)
  assert metrics.REFERENCE_SIGMA == EvalConfig().denoise_sigma


def test_add_noise_is_seeded_clipped_and_of_the_right_scale():
  clean = np.full((8, 28, 28, 1), 0.5, np.float32)
  first = metrics.add_noise(clean, 0.1, seed=3)
  assert np.array_equal(first, metrics.add_noise(clean, 0.1, seed=3))
  assert not np.array_equal(first, metrics.add_noise(clean, 0.1, seed=4))
  assert first.dtype == np.float32 and first.shape == clean.shape
  assert np.std(first - clean) == pytest.approx(0.1, rel=0.05)
  heavy = metrics.add_noise(clean, 2.0, seed=3)
  assert heavy.min() == 0.0 and heavy.max() == 1.0


def test_class_agreement_overall_and_per_class():
  requested = [0, 0, 1, 1, 2, 2, 2, 2]
  predicted = [0, 0, 1, 7, 2, 2, 2, 0]
  result = metrics.class_agreement(predicted, requested)
  assert result["overall"] == pytest.approx(6 / 8)
  assert result["per_class"][:3] == pytest.approx([1.0, 0.5, 0.75])
  assert result["per_class"][3:] == [None] * 7  # no samples requested for these digits
  assert result["num_samples"] == 8


def test_frechet_distance_of_identical_sets_is_zero():
  features = np.random.default_rng(0).normal(size=(200, 8))
  assert metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_shifted_set_is_squared_mean_difference():
  features = np.random.default_rng(0).normal(size=(200, 8))
  shift = np.linspace(-1.0, 1.0, 8)
  distance = metrics.frechet_distance(features, features + shift)
  assert distance == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_of_independent_gaussians_with_shifted_means():
  rng = np.random.default_rng(1)
  shift = np.full(4, 1.0)
  distance = metrics.frechet_distance(rng.normal(size=(4000, 4)),
                                      rng.normal(size=(4000, 4)) + shift)
  assert distance == pytest.approx(4.0, abs=0.15)


def test_frechet_distance_survives_fewer_samples_than_dimensions():
  rng = np.random.default_rng(2)
  distance = metrics.frechet_distance(rng.normal(size=(5, 16)), rng.normal(size=(5, 16)))
  assert math.isfinite(distance) and distance >= 0.0


def test_kernel_inception_distance_near_zero_for_same_distribution_and_positive_for_shift():
  rng = np.random.default_rng(3)
  same = metrics.kernel_inception_distance(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)))
  shifted = metrics.kernel_inception_distance(rng.normal(size=(300, 8)),
                                              rng.normal(size=(300, 8)) + 1.0)
  assert abs(same) < 0.05
  assert shifted > 10 * abs(same) and shifted > 0.1
  # Subsets: seeded, so repeatable.
  big_a, big_b = rng.normal(size=(50, 8)), rng.normal(size=(60, 8)) + 1.0
  assert (metrics.kernel_inception_distance(big_a, big_b, subset_size=20, seed=1)
          == metrics.kernel_inception_distance(big_a, big_b, subset_size=20, seed=1))


def _model_metrics(psnr, agreement, frechet_ratio=1.5):
  return {
      "denoising": {"psnr": psnr},
      "class_agreement": {"overall": agreement},
      "frechet": {"ratio": frechet_ratio},
  }


_CONFIG = EvalConfig(min_psnr=20.0, min_class_agreement=0.9, psnr_tolerance_db=0.1,
                     agreement_tolerance=0.01)


def test_blessing_without_baseline_uses_absolute_thresholds():
  blessed, reasons = metrics.decide_blessing(_model_metrics(21.0, 0.95), None, _CONFIG)
  assert blessed
  assert all(reason.startswith("ok: ") for reason in reasons)
  blessed, reasons = metrics.decide_blessing(_model_metrics(19.9, 0.95), None, _CONFIG)
  assert not blessed
  assert any(reason.startswith("FAIL: psnr") for reason in reasons)
  blessed, _ = metrics.decide_blessing(_model_metrics(21.0, 0.85), None, _CONFIG)
  assert not blessed


def test_blessing_fails_on_missing_or_nan_metrics():
  assert not metrics.decide_blessing(_model_metrics(float("nan"), 0.95), None, _CONFIG)[0]
  assert not metrics.decide_blessing(_model_metrics(None, 0.95), None, _CONFIG)[0]


def test_blessing_frechet_ratio_only_checked_when_configured():
  candidate = _model_metrics(21.0, 0.95, frechet_ratio=5.0)
  assert metrics.decide_blessing(candidate, None, _CONFIG)[0]
  strict = dataclasses.replace(_CONFIG, max_frechet_ratio=3.0)
  assert not metrics.decide_blessing(candidate, None, strict)[0]
  assert metrics.decide_blessing(_model_metrics(21.0, 0.95, 2.0), None, strict)[0]
  assert not metrics.decide_blessing(_model_metrics(21.0, 0.95, None), None, strict)[0]


@pytest.mark.parametrize("psnr, agreement, expected", [
    (22.5, 0.97, True),  # better
    (22.0, 0.95, True),  # equal
    (21.95, 0.945, True),  # slightly worse, within tolerance
    (21.8, 0.95, False),  # psnr worse than tolerance
    (22.0, 0.93, False),  # agreement worse than tolerance
])
def test_blessing_against_baseline(psnr, agreement, expected):
  baseline = _model_metrics(22.0, 0.95)
  blessed, reasons = metrics.decide_blessing(_model_metrics(psnr, agreement), baseline, _CONFIG)
  assert blessed == expected, reasons
  assert any("baseline" in reason for reason in reasons)


@pytest.mark.parametrize("sampling, expected", [
    ({"sampler": "ddim", "guidance_sigma_interval": [1.0, None]}, "ddim, guidance at sigma >= 1"),
    ({"sampler": "ddim", "guidance_sigma_interval": [0.5, 4.0]},
     "ddim, guidance at sigma in [0.5, 4]"),
    ({"sampler": "ancestral", "guidance_sigma_interval": [0.0, None]},
     "ancestral, guidance at every step"),
    ({"sampler": "unknown", "guidance_sigma_interval": None}, "unknown, guidance at every step"),
    ({"num_steps": 20}, "unrecorded"),  # metrics written before the sampler was recorded
    (None, "unrecorded"),
])
def test_sampling_setup_names_the_sampler_and_where_it_guides(sampling, expected):
  assert metrics.sampling_setup(sampling) == expected


def test_blessing_notes_a_baseline_that_samples_differently_without_failing_on_it():
  candidate, baseline = _model_metrics(22.0, 0.95), _model_metrics(22.0, 0.95)
  candidate["sampling"] = {"sampler": "ddim", "guidance_sigma_interval": [1.0, None]}
  baseline["sampling"] = {"sampler": "ddim", "guidance_sigma_interval": None}
  blessed, reasons = metrics.decide_blessing(candidate, baseline, _CONFIG)
  assert blessed
  assert any("sigma >= 1" in reason and "every step" in reason for reason in reasons)
  baseline["sampling"] = dict(candidate["sampling"])
  assert not any("samples with" in reason
                 for reason in metrics.decide_blessing(candidate, baseline, _CONFIG)[1])


def test_blessing_against_baseline_still_needs_absolute_thresholds():
  baseline = _model_metrics(15.0, 0.5)
  assert not metrics.decide_blessing(_model_metrics(16.0, 0.6), baseline, _CONFIG)[0]


def test_sample_grid_layout():
  images = np.zeros((10, 3, 28, 28, 1), np.float32)
  images[4, 2] = 1.0
  grid = report.sample_grid(images, scale=1)
  assert grid.size == (3 * 30 + 2, 10 * 30 + 2)
  pixels = np.asarray(grid)
  assert pixels[2 + 4 * 30 + 5, 2 + 2 * 30 + 5] == 255
  assert pixels[2 + 4 * 30 + 5, 2 + 1 * 30 + 5] == 0
  assert report.png_bytes(grid).startswith(b"\x89PNG")


def test_force_bless_blesses_past_the_baseline_but_not_past_the_thresholds():
  baseline = _model_metrics(22.0, 0.95)
  forced = dataclasses.replace(_CONFIG, force_bless_reason="new eval data")
  blessed, reasons = metrics.decide_blessing(_model_metrics(21.0, 0.95), baseline, forced)
  assert blessed
  assert metrics.forced_blessing(reasons) == (
      "ok: force-blessed past the baseline comparison: new eval data")
  blessed, reasons = metrics.decide_blessing(_model_metrics(19.0, 0.95), baseline, forced)
  assert not blessed and metrics.forced_blessing(reasons) is None
  # Nothing to force when the comparison passes.
  blessed, reasons = metrics.decide_blessing(_model_metrics(22.5, 0.95), baseline, forced)
  assert blessed and metrics.forced_blessing(reasons) is None


def test_non_finite_candidate_fails_with_the_names_of_the_metrics():
  candidate = _model_metrics(float("nan"), 0.95)
  candidate["denoising"]["mse"] = float("inf")
  blessed, reasons = metrics.decide_blessing(candidate, None, _CONFIG)
  assert not blessed
  assert reasons[0] == "FAIL: non-finite metrics: psnr=nan, mse=inf"
  # Not even past the baseline comparison.
  forced = dataclasses.replace(_CONFIG, force_bless_reason="anyway")
  assert not metrics.decide_blessing(candidate, _model_metrics(22.0, 0.95), forced)[0]


def test_unreadable_or_non_finite_baseline_is_not_compared_and_says_so():
  candidate = _model_metrics(21.0, 0.95)  # worse than a 22 dB baseline by more than 0.1 dB
  blessed, reasons = metrics.decide_blessing(candidate, None, _CONFIG,
                                             baseline_unreadable="gone: OSError")
  assert blessed
  assert ("ok: baseline_unreadable: gone: OSError; absolute thresholds only, not compared with "
          "the baseline") in reasons
  blessed, reasons = metrics.decide_blessing(candidate, _model_metrics(float("nan"), 0.95),
                                             _CONFIG)
  assert blessed
  assert any(reason.startswith("ok: baseline_unreadable: non-finite metrics: psnr=nan")
             for reason in reasons)
  assert not any(">= baseline" in reason for reason in reasons)
  # The absolute thresholds still hold.
  assert not metrics.decide_blessing(_model_metrics(19.0, 0.95), None, _CONFIG,
                                     baseline_unreadable="gone")[0]


def test_frechet_and_kid_of_non_finite_features_are_nan():
  features = np.random.default_rng(0).normal(size=(20, 4))
  broken = features.copy()
  broken[3, 1] = np.nan
  assert math.isnan(metrics.frechet_distance(broken, features))
  assert math.isnan(metrics.kernel_inception_distance(features, broken))
