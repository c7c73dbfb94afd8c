"""Metrics of the diffusion evaluator: plain functions on arrays, testable without TFX.

Images are float arrays [N, 28, 28, 1] in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
from scipy import linalg
import tensorflow as tf

from core.config import EvalConfig
from core.config import NUM_CLASSES

# The published reference protocol (sigma 0.4 Gaussian noise on [0, 1] images, clipped, one-step
# x0 prediction), reported beside our numbers. RMSE = sqrt(MSE); PSNR is the mean per-image PSNR.
REFERENCE_SIGMA = 0.4
REFERENCE_MSE = 0.0069
REFERENCE_RMSE = 0.0831
REFERENCE_PSNR_DB = 21.92
REFERENCE_DENOISING = {
    "sigma": REFERENCE_SIGMA,
    "mse": REFERENCE_MSE,
    "rmse": REFERENCE_RMSE,
    "psnr": REFERENCE_PSNR_DB,
}

# tf.image.psnr is +inf for an exact reconstruction; one such image would make the mean infinite
# (and metrics.json invalid), so each image's PSNR is capped here (= per-image MSE of 1e-10).
PSNR_CAP_DB = 100.0


def add_noise(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
  """Returns clip(images + N(0, sigma^2), 0, 1), reproducible from `seed`.

  Stateless: the same seed gives the same noise whatever ran before, and the noise of every sigma
  is the same draw scaled, so a PSNR-vs-sigma curve is not jittered by resampling.
  """
  images = np.asarray(images, np.float32)
  noise = tf.random.stateless_normal(images.shape, seed=[seed, 0], dtype=tf.float32).numpy()
  return np.clip(images + np.float32(sigma) * noise, 0.0, 1.0)


def denoising_metrics(clean: np.ndarray, denoised: np.ndarray) -> Dict[str, float]:
  """Reconstruction error of `denoised` against `clean`.

  Returns:
    mse: mean squared error over all pixels of all images.
    rmse: sqrt(mse).
    psnr: mean over images of the per-image tf.image.psnr(max_val=1.0), each capped at
      PSNR_CAP_DB.
    num_images: N.
  """
  clean = np.asarray(clean, np.float32)
  denoised = np.asarray(denoised, np.float32)
  if clean.shape != denoised.shape:
    raise ValueError(f"Shape mismatch: clean {clean.shape} vs denoised {denoised.shape}")
  if clean.shape[0] == 0:
    raise ValueError("denoising_metrics needs at least one image")
  mse = float(np.mean(np.square(clean.astype(np.float64) - denoised.astype(np.float64))))
  per_image_psnr = tf.image.psnr(denoised, clean, max_val=1.0).numpy().astype(np.float64)
  per_image_psnr = np.minimum(per_image_psnr, PSNR_CAP_DB)  # +inf -> cap; NaN stays NaN
  return {
      "mse": mse,
      "rmse": math.sqrt(mse),
      "psnr": float(np.mean(per_image_psnr)),
      "num_images": int(clean.shape[0]),
  }


def class_agreement(predicted: Sequence[int], requested: Sequence[int],
                    num_classes: int = NUM_CLASSES) -> Dict[str, Any]:
  """Share of samples the judge classifies as the class they were generated for.

  Returns:
    overall: share over all samples.
    per_class: list indexed by requested class; None for a class with no samples.
    num_samples: N.
  """
  predicted = np.asarray(predicted).reshape(-1)
  requested = np.asarray(requested).reshape(-1)
  if predicted.shape != requested.shape:
    raise ValueError(f"Shape mismatch: predicted {predicted.shape} vs requested {requested.shape}")
  if predicted.size == 0:
    raise ValueError("class_agreement needs at least one sample")
  correct = predicted == requested
  per_class: List[Optional[float]] = []
  for digit in range(num_classes):
    of_digit = requested == digit
    per_class.append(float(np.mean(correct[of_digit])) if of_digit.any() else None)
  return {
      "overall": float(np.mean(correct)),
      "per_class": per_class,
      "num_samples": int(predicted.size),
  }


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
  """Frechet distance between Gaussians fitted to two feature sets [N, D] (FID's formula).

  d = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 sqrt(C_a C_b)). sqrtm of a near-singular product (few
  samples, N < D) can fail or return small imaginary parts: retry with eps on the diagonal and
  drop the imaginary part, as the reference FID implementations do.
  """
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"Need two [N, D] feature sets with the same D: {a.shape}, {b.shape}")
  if a.shape[0] < 2 or b.shape[0] < 2:
    raise ValueError("frechet_distance needs at least two samples per set")
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    # A model whose images are NaN: report NaN (the blessing names it) instead of sqrtm's error.
    logging.warning("frechet_distance: non-finite features; the distance is NaN")
    return math.nan
  mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
  cov_a = np.atleast_2d(np.cov(a, rowvar=False))
  cov_b = np.atleast_2d(np.cov(b, rowvar=False))
  covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
  if not np.isfinite(covmean).all():
    logging.warning("sqrtm of the covariance product is not finite; adding %g to the diagonal", eps)
    offset = np.eye(cov_a.shape[0]) * eps
    covmean, _ = linalg.sqrtm((cov_a + offset) @ (cov_b + offset), disp=False)
  if np.iscomplexobj(covmean):
    max_imaginary = float(np.max(np.abs(np.diagonal(covmean).imag)))
    if max_imaginary > 1e-3:
      logging.warning("sqrtm has a large imaginary component (%g); using the real part",
                      max_imaginary)
    covmean = covmean.real
  diff = mu_a - mu_b
  distance = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
  return max(distance, 0.0)  # rounding can push identical sets a hair below zero


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray,
                              subset_size: int = 1000, num_subsets: int = 10,
                              seed: int = 0) -> float:
  """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3 (KID).

  Unlike the Frechet distance it is unbiased in N, so it stays meaningful for the few samples of
  small profiles. Averaged over random subsets so memory stays O(subset_size^2) on large sets;
  with both sets no larger than `subset_size` it is one exact, deterministic estimate.
  """
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"Need two [N, D] feature sets with the same D: {a.shape}, {b.shape}")
  size = min(subset_size, a.shape[0], b.shape[0])
  if size < 2:
    raise ValueError("kernel_inception_distance needs at least two samples per set")
  if not (np.isfinite(a).all() and np.isfinite(b).all()):
    logging.warning("kernel_inception_distance: non-finite features; KID is NaN")
    return math.nan
  dim = a.shape[1]

  def mmd2(x: np.ndarray, y: np.ndarray) -> float:
    k_xx = (x @ x.T / dim + 1.0) ** 3
    k_yy = (y @ y.T / dim + 1.0) ** 3
    k_xy = (x @ y.T / dim + 1.0) ** 3
    m = x.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())

  if size == a.shape[0] == b.shape[0]:
    return mmd2(a, b)
  rng = np.random.default_rng(seed)
  estimates = [
      mmd2(a[rng.choice(a.shape[0], size, replace=False)],
           b[rng.choice(b.shape[0], size, replace=False)])
      for _ in range(num_subsets)
  ]
  return float(np.mean(estimates))


def guidance_interval_text(interval: Optional[Sequence[Optional[float]]]) -> str:
  """Where guidance above 1 applies, from a saved [min, max] interval (None, or max None = no
  bound): "every step", "sigma >= 1" or "sigma in [0.5, 4]"."""
  low, high = interval if interval else (0.0, None)
  if not low and high is None:
    return "every step"
  if high is None:
    return f"sigma >= {low:g}"
  return f"sigma in [{low:g}, {high:g}]"


def sampling_setup(sampling: Optional[Mapping[str, Any]]) -> str:
  """What a model's exported sampler does with a request, e.g. "ddim, guidance at sigma >= 1"."""
  if not sampling or "sampler" not in sampling:
    return "unrecorded"
  where = guidance_interval_text(sampling.get("guidance_sigma_interval"))
  return f"{sampling['sampler']}, guidance at {where}"


def _at_least(value: Optional[float], bound: float) -> bool:
  """value >= bound, where a missing or NaN value fails."""
  return value is not None and not math.isnan(value) and value >= bound


def _headline(metrics: Mapping[str, Any]) -> Tuple[Optional[float], Optional[float],
                                                   Optional[float]]:
  """(psnr, class agreement, Frechet ratio) of one model's metrics."""
  return (metrics["denoising"]["psnr"], metrics["class_agreement"]["overall"],
          metrics["frechet"].get("ratio"))


# The numbers of one model's metrics that must be finite: (name in messages, section, key).
_FINITE_METRICS = (
    ("psnr", "denoising", "psnr"),
    ("mse", "denoising", "mse"),
    ("rmse", "denoising", "rmse"),
    ("class_agreement", "class_agreement", "overall"),
    ("frechet", "frechet", "distance"),
    ("frechet_ratio", "frechet", "ratio"),
    ("kid", "frechet", "kid"),
)


def non_finite_metrics(metrics: Mapping[str, Any]) -> List[str]:
  """"name=value" for each headline number of one model's metrics that is NaN or infinite (a
  model whose outputs are NaN); numbers absent or None (not computed) are not listed."""
  found = []
  for name, section, key in _FINITE_METRICS:
    value = (metrics.get(section) or {}).get(key)
    if value is not None and not math.isfinite(value):
      found.append(f"{name}={value}")
  return found


NON_FINITE = "non-finite metrics"
BASELINE_UNREADABLE = "baseline_unreadable"
FORCED_BLESSING = "ok: force-blessed"


def decide_blessing(metrics: Mapping[str, Any], baseline_metrics: Optional[Mapping[str, Any]],
                    config: EvalConfig,
                    baseline_unreadable: Optional[str] = None) -> Tuple[bool, List[str]]:
  """Whether the candidate is blessed, with one line per check ("ok: ..." or "FAIL: ...").

  Blessed iff every headline number is finite, psnr >= min_psnr, agreement >=
  min_class_agreement, the Frechet ratio is within max_frechet_ratio (when set) and, with a
  baseline, the candidate is not worse than it by more than psnr_tolerance_db /
  agreement_tolerance. With `config.force_bless_reason`, a candidate that passes the absolute
  thresholds is blessed whatever the baseline comparison says, and a line starting with
  FORCED_BLESSING records the reason.

  A baseline that could not be scored (`baseline_unreadable`, or metrics that are not finite)
  is not compared with: the candidate is judged on the absolute thresholds alone, and a line
  "ok: baseline_unreadable: <why>; ..." says the comparison was not made.

  Args:
    metrics: one model's metrics, as the executor computes them: needs
      metrics["denoising"]["psnr"], metrics["class_agreement"]["overall"] and
      metrics["frechet"]["ratio"] (may be None).
    baseline_metrics: the baseline's metrics in the same form, or None (no blessed model yet).
    config: the thresholds.
    baseline_unreadable: why the baseline given could not be loaded or scored (then
      baseline_metrics is None), or None.
  """
  psnr, agreement, frechet_ratio = _headline(metrics)
  non_finite = non_finite_metrics(metrics)
  checks = [(False, f"{NON_FINITE}: {', '.join(non_finite)}")] if non_finite else []
  checks += [
      (_at_least(psnr, config.min_psnr),
       f"psnr {_fmt(psnr)} dB >= min_psnr {config.min_psnr:g} dB"),
      (_at_least(agreement, config.min_class_agreement),
       f"class agreement {_fmt(agreement)} >= min_class_agreement "
       f"{config.min_class_agreement:g}"),
  ]
  if config.max_frechet_ratio is not None:
    passed = frechet_ratio is not None and not math.isnan(frechet_ratio) and (
        frechet_ratio <= config.max_frechet_ratio)
    checks.append((passed, f"Frechet ratio {_fmt(frechet_ratio)} <= max_frechet_ratio "
                           f"{config.max_frechet_ratio:g}"))
  absolute_ok = all(passed for passed, _ in checks)
  if baseline_metrics is not None and baseline_unreadable is None:
    base_non_finite = non_finite_metrics(baseline_metrics)
    if base_non_finite:
      baseline_unreadable = f"{NON_FINITE}: {', '.join(base_non_finite)}"
  if baseline_unreadable is not None:
    checks.append((True, f"{BASELINE_UNREADABLE}: {baseline_unreadable}; absolute thresholds "
                         "only, not compared with the baseline"))
  elif baseline_metrics is not None:
    base_psnr, base_agreement, _ = _headline(baseline_metrics)
    setup = sampling_setup(metrics.get("sampling"))
    base_setup = sampling_setup(baseline_metrics.get("sampling"))
    if setup != base_setup:
      # Both answer the same requests; each runs the sampler fixed at its own export, so the
      # agreement comparison is between the models as served, not the networks alone.
      checks.append((True, f"candidate samples with {setup}, baseline with {base_setup}: "
                           "agreement compares the models as each one serves the same request"))
    # (label, short label, unit, candidate value, baseline value, tolerance)
    comparisons = (
        ("psnr", "psnr", " dB", psnr, base_psnr, config.psnr_tolerance_db),
        ("class agreement", "agreement", "", agreement, base_agreement,
         config.agreement_tolerance),
    )
    for label, short_label, unit, value, base, tolerance in comparisons:
      if base is None or math.isnan(base):
        checks.append((True, f"baseline {label} unavailable; {short_label} not compared"))
      else:
        checks.append((_at_least(value, base - tolerance),
                       f"{label} {_fmt(value)}{unit} >= baseline {_fmt(base)} - "
                       f"{tolerance:g}{unit}"))
  else:
    checks.append((True, "no baseline model: absolute thresholds only"))
  blessed = all(passed for passed, _ in checks)
  reasons = [("ok: " if passed else "FAIL: ") + text for passed, text in checks]
  if not blessed and absolute_ok and config.force_bless_reason:
    blessed = True
    reasons.append(f"{FORCED_BLESSING} past the baseline comparison: {config.force_bless_reason}")
  return blessed, reasons


def forced_blessing(reasons: Sequence[str]) -> Optional[str]:
  """The reason line of a forced blessing among decide_blessing's reasons, or None."""
  return next((reason for reason in reasons if reason.startswith(FORCED_BLESSING)), None)


def _fmt(value: Optional[float]) -> str:
  return "n/a" if value is None else f"{value:.4g}"
