"""Executor of the DiffusionEvaluator: a thin adapter from TFX artifacts to metrics.py.

Writes into the `evaluation` artifact's URI:
  metrics.json      all numbers (schema below), the reference numbers, the EvalConfig and model URIs
  sample_grid.png   guided samples, one row per digit 0..9, `grid_seeds` columns
  report.md         ours vs reference, the PSNR-vs-noise curve, agreement per digit, the blessing

metrics.json:
  candidate, baseline (None without a baseline): one model's metrics each:
    denoising        {sigma, num_images, mse, rmse, psnr}   the reference protocol on the eval split
    denoising_curve  [{sigma, num_images, mse, rmse, psnr}, ...]
    sampling         {samples_per_class, num_samples, num_steps, guidance_scale, batch_size, seed}
    class_agreement  {overall, per_class: [10 shares, None if no sample], num_samples}
    frechet          {num_images, distance, real_floor, ratio, kid, kid_real_floor}
    timings_s        {denoising, denoising_curve, sampling, judging}
  reference   {sigma, mse, rmse, psnr}           the published protocol numbers
  blessing    {blessed, reasons: ["ok: ..." | "FAIL: ..."]}
  eval_config the EvalConfig used, as a dict
  models      {candidate: {uri, id}, baseline: {uri, id, same_as_candidate} | None,
               classifier: {uri, id}}
  data        {examples_uri, num_eval_images, num_train_images, timings_s: {real_data}}
Non-finite numbers are written as null so the file stays strict JSON.

The blessing artifact follows the contract of TFX's own Evaluator (custom properties `blessed`,
`current_model`, `current_model_id`, `baseline_model`, `baseline_model_id`, and an empty BLESSED or
NOT_BLESSED file), so LatestBlessedModelStrategy and the Pusher read it unchanged.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from components.diffusion_evaluator import metrics as metrics_lib
from components.diffusion_evaluator import report
from components.diffusion_evaluator.metrics import decide_blessing  # noqa: F401  (re-exported)
from pipeline.config import EvalConfig
from pipeline.config import IMAGE_KEY
from pipeline.config import IMAGE_SIZE
from pipeline.config import LABEL_KEY
from pipeline.config import NUM_CLASSES

# Keys of the component spec (component.py uses the same constants).
EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
CLASSIFIER_MODEL_KEY = "classifier_model"
BASELINE_MODEL_KEY = "baseline_model"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
EVAL_CONFIG_KEY = "eval_config"

METRICS_FILE_NAME = "metrics.json"
SAMPLE_GRID_FILE_NAME = "sample_grid.png"
REPORT_FILE_NAME = "report.md"

# Headline numbers also stored as float custom properties of the evaluation artifact (MLMD queries).
_EVALUATION_PROPERTIES = {
    "psnr": ("denoising", "psnr"),
    "mse": ("denoising", "mse"),
    "rmse": ("denoising", "rmse"),
    "class_agreement": ("class_agreement", "overall"),
    "frechet_distance": ("frechet", "distance"),
    "frechet_ratio": ("frechet", "ratio"),
    "kid": ("frechet", "kid"),
}


@contextlib.contextmanager
def _timed(what: str, timings: Dict[str, float], key: str) -> Iterator[None]:
  logging.info("DiffusionEvaluator: %s ...", what)
  start = time.monotonic()
  yield
  timings[key] = round(time.monotonic() - start, 3)
  logging.info("DiffusionEvaluator: %s took %.1f s", what, timings[key])


def read_split(examples: List[types.Artifact], split: str,
               limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """The first `limit` (None = all) examples of a split: images [N, 28, 28, 1] in [0, 1], labels."""
  split_uri = artifact_utils.get_split_uri(examples, split)
  files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*.gz")))
  if not files:
    raise ValueError(f"No *.gz TFRecord files in {split_uri}")
  feature_spec = {
      IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_SIZE * IMAGE_SIZE], tf.int64),
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  }
  dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
  if limit is not None:
    dataset = dataset.take(limit)
  dataset = dataset.batch(1024).map(lambda records: tf.io.parse_example(records, feature_spec))
  images, labels = [], []
  for batch in dataset.as_numpy_iterator():
    images.append(batch[IMAGE_KEY])
    labels.append(batch[LABEL_KEY])
  if not images:
    raise ValueError(f"Split {split!r} at {split_uri} has no examples")
  images = np.concatenate(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
  return images.astype(np.float32) / 255.0, np.concatenate(labels).astype(np.int32)


def _batches(count: int, batch_size: int) -> Iterator[Tuple[int, slice]]:
  for index, start in enumerate(range(0, count, batch_size)):
    yield index, slice(start, min(start + batch_size, count))


class _DiffusionModel:
  """The diffusion SavedModel's two signatures, called in batches."""

  def __init__(self, model_uri: str, batch_size: int):
    path = path_utils.serving_model_path(model_uri)
    logging.info("DiffusionEvaluator: loading diffusion model %s", path)
    # Keep the loaded object: its signatures hold only weak references to the variables.
    self._loaded = tf.saved_model.load(path)
    self._sample = self._loaded.signatures["serving_default"]
    self._denoise = self._loaded.signatures["denoise"]
    # The exported sampler rejects requests above its max_batch variable (when it has one).
    max_batch = getattr(self._loaded, "max_batch", None)
    if isinstance(max_batch, tf.Variable):
      batch_size = min(batch_size, int(max_batch.numpy()))
    self._batch_size = batch_size

  def sample(self, labels: np.ndarray, guidance_scale: float, num_steps: int,
             seed: int) -> np.ndarray:
    """Float images [N, 28, 28, 1] in [0, 1]; batch i is drawn with seed `seed + i`."""
    images = []
    for index, rows in _batches(len(labels), self._batch_size):
      outputs = self._sample(
          labels=tf.constant(labels[rows], tf.int32),
          guidance_scale=tf.constant(guidance_scale, tf.float32),
          num_steps=tf.constant(num_steps, tf.int32),
          seed=tf.constant(seed + index, tf.int32))
      images.append(outputs["images_float"].numpy())
    return np.concatenate(images).astype(np.float32)

  def denoise(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
    denoised = []
    for _, rows in _batches(len(noisy), self._batch_size):
      outputs = self._denoise(noisy_images=tf.constant(noisy[rows], tf.float32),
                              noise_sigma=tf.constant(sigma, tf.float32))
      denoised.append(outputs["denoised_images"].numpy())
    return np.concatenate(denoised).astype(np.float32)


class _Judge:
  """The classifier SavedModel: predicted classes and penultimate features, in batches."""

  def __init__(self, model_uri: str, batch_size: int):
    path = path_utils.serving_model_path(model_uri)
    logging.info("DiffusionEvaluator: loading classifier %s", path)
    self._loaded = tf.saved_model.load(path)
    self._classify = self._loaded.signatures["serving_default"]
    self._batch_size = batch_size

  def __call__(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    predicted, features = [], []
    for _, rows in _batches(len(images), self._batch_size):
      outputs = self._classify(images=tf.constant(images[rows], tf.float32))
      predicted.append(np.argmax(outputs["logits"].numpy(), axis=-1))
      features.append(outputs["features"].numpy())
    return np.concatenate(predicted).astype(np.int32), np.concatenate(features)


class _RealData:
  """Eval-split images and what every model is compared against (computed once, shared)."""

  def __init__(self, eval_images: np.ndarray, eval_features: np.ndarray,
               train_features: np.ndarray, seed: int):
    self.eval_images = eval_images
    self.eval_features = eval_features  # judge features of `num_images` eval images
    self.num_images = len(eval_features)
    self.frechet_floor = metrics_lib.frechet_distance(train_features, eval_features)
    self.kid_floor = metrics_lib.kernel_inception_distance(train_features, eval_features, seed=seed)


def _pick(count: int, available: int, seed: int) -> np.ndarray:
  """Indices of a seeded random subset of size `count` (all, in order, when count == available)."""
  if count >= available:
    return np.arange(available)
  return np.sort(np.random.default_rng(seed).choice(available, count, replace=False))


def _sample_labels(config: EvalConfig) -> np.ndarray:
  return np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), config.samples_per_class)


def _evaluate_model(model: _DiffusionModel, judge: _Judge, real: _RealData,
                    config: EvalConfig) -> Tuple[Dict[str, Any], np.ndarray]:
  """One diffusion model's metrics under the fixed protocol and seeds, and its samples."""
  timings: Dict[str, float] = {}
  eval_images = real.eval_images

  clean = eval_images[:config.denoise_num_images]  # None = all
  with _timed(f"reference denoising at sigma {config.denoise_sigma} on {len(clean)} images",
              timings, "denoising"):
    noisy = metrics_lib.add_noise(clean, config.denoise_sigma, config.seed)
    denoising = metrics_lib.denoising_metrics(clean, model.denoise(noisy, config.denoise_sigma))
    denoising = {"sigma": config.denoise_sigma, **denoising}
  logging.info("DiffusionEvaluator: MSE %.5f, RMSE %.4f, PSNR %.2f dB (reference: %s)",
               denoising["mse"], denoising["rmse"], denoising["psnr"],
               metrics_lib.REFERENCE_DENOISING)

  curve = []
  with _timed(f"PSNR-vs-noise curve at sigmas {config.denoise_curve_sigmas}", timings,
              "denoising_curve"):
    clean = eval_images[:config.denoise_curve_num_images]
    for sigma in config.denoise_curve_sigmas:
      noisy = metrics_lib.add_noise(clean, sigma, config.seed)
      point = metrics_lib.denoising_metrics(clean, model.denoise(noisy, sigma))
      curve.append({"sigma": sigma, **point})

  labels = _sample_labels(config)
  with _timed(f"{len(labels)} guided samples ({config.sample_steps} steps, guidance "
              f"{config.guidance_scale})", timings, "sampling"):
    samples = model.sample(labels, config.guidance_scale, config.sample_steps, config.seed)

  with _timed("judging the samples", timings, "judging"):
    predicted, sample_features = judge(samples)
    agreement = metrics_lib.class_agreement(predicted, labels)
    picked = _pick(real.num_images, len(samples), config.seed)
    frechet = metrics_lib.frechet_distance(sample_features[picked], real.eval_features)
    kid = metrics_lib.kernel_inception_distance(sample_features[picked], real.eval_features,
                                                seed=config.seed)
  logging.info("DiffusionEvaluator: class agreement %.3f, Frechet %.3f (floor %.3f)",
               agreement["overall"], frechet, real.frechet_floor)

  model_metrics = {
      "denoising": denoising,
      "denoising_curve": curve,
      "sampling": {
          "samples_per_class": config.samples_per_class,
          "num_samples": int(len(labels)),
          "num_steps": config.sample_steps,
          "guidance_scale": config.guidance_scale,
          "batch_size": config.batch_size,
          "seed": config.seed,
      },
      "class_agreement": agreement,
      "frechet": {
          "num_images": real.num_images,
          "distance": frechet,
          "real_floor": real.frechet_floor,
          "ratio": frechet / real.frechet_floor if real.frechet_floor > 0 else None,
          "kid": kid,
          "kid_real_floor": real.kid_floor,
      },
      "timings_s": timings,
  }
  return model_metrics, samples


def _grid_images(model: _DiffusionModel, samples: np.ndarray, config: EvalConfig) -> np.ndarray:
  """[10, grid_seeds, 28, 28, 1]: the scored samples when there are enough, else fresh ones."""
  if config.samples_per_class >= config.grid_seeds:
    per_digit = samples.reshape(NUM_CLASSES, config.samples_per_class, *samples.shape[1:])
    return per_digit[:, :config.grid_seeds]
  labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), config.grid_seeds)
  grid = model.sample(labels, config.guidance_scale, config.sample_steps, config.seed)
  return grid.reshape(NUM_CLASSES, config.grid_seeds, *grid.shape[1:])


def _same_artifact(a: types.Artifact, b: types.Artifact) -> bool:
  return bool(a.id and a.id == b.id) or a.uri == b.uri


def _json_safe(value: Any) -> Any:
  """Replaces non-finite floats by None (strict JSON) and numpy scalars by Python ones."""
  if isinstance(value, dict):
    return {key: _json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(item) for item in value]
  if isinstance(value, (np.floating, float)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def _write_blessing(blessing: types.Artifact, candidate: types.Artifact,
                    baseline: Optional[types.Artifact], blessed: bool, reasons: List[str],
                    exec_properties: Dict[str, Any]) -> None:
  """The ModelBlessing exactly as tfx/components/evaluator/executor.py writes it."""
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                      candidate.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, candidate.id)
  if baseline is not None:
    blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY,
                                        baseline.uri)
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY,
                                     baseline.id)
  if "current_component_id" in exec_properties:
    blessing.set_string_custom_property("component_id", exec_properties["current_component_id"])
  failures = [reason for reason in reasons if reason.startswith("FAIL")]
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY,
                                      "; ".join(failures or reasons))
  file_name = constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME
  io_utils.write_string_file(os.path.join(blessing.uri, file_name), "")
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      constants.BLESSED_VALUE if blessed else constants.NOT_BLESSED_VALUE)
  logging.info("DiffusionEvaluator: blessed=%s written to %s", blessed, blessing.uri)


class Executor(base_executor.BaseExecutor):
  """Scores a diffusion model (denoising, guided samples), optionally against a baseline."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    config = EvalConfig.from_json(exec_properties[EVAL_CONFIG_KEY])
    examples = input_dict[EXAMPLES_KEY]
    candidate = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    classifier = artifact_utils.get_single_instance(input_dict[CLASSIFIER_MODEL_KEY])
    baselines = input_dict.get(BASELINE_MODEL_KEY) or []
    if len(baselines) > 1:
      raise ValueError(f"There can be only one baseline model, there are {len(baselines)}.")
    baseline = baselines[0] if baselines else None
    evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
    blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])

    judge = _Judge(classifier.uri, config.batch_size)
    num_samples = NUM_CLASSES * config.samples_per_class
    timings: Dict[str, float] = {}
    with _timed("reading data and the real-vs-real floor", timings, "real_data"):
      eval_images, _ = read_split(examples, "eval")
      # Real-vs-real floor: as many train images as samples, against as many eval images.
      train_images, _ = read_split(examples, "train", limit=num_samples)
      num_fid = min(num_samples, len(eval_images), len(train_images))
      eval_features = judge(eval_images[_pick(num_fid, len(eval_images), config.seed)])[1]
      train_features = judge(train_images[_pick(num_fid, len(train_images), config.seed)])[1]
      real = _RealData(eval_images, eval_features, train_features, config.seed)
    logging.info("DiffusionEvaluator: %d eval images, %d images per side for Frechet distance",
                 len(eval_images), num_fid)

    candidate_model = _DiffusionModel(candidate.uri, config.batch_size)
    candidate_metrics, samples = _evaluate_model(candidate_model, judge, real, config)
    baseline_metrics = None
    same_as_candidate = baseline is not None and _same_artifact(candidate, baseline)
    if same_as_candidate:
      logging.info("DiffusionEvaluator: the baseline is the candidate; reusing its metrics")
      baseline_metrics = candidate_metrics
    elif baseline is not None:
      logging.info("DiffusionEvaluator: evaluating baseline %s", baseline.uri)
      baseline_model = _DiffusionModel(baseline.uri, config.batch_size)
      baseline_metrics, _ = _evaluate_model(baseline_model, judge, real, config)

    blessed, reasons = metrics_lib.decide_blessing(candidate_metrics, baseline_metrics, config)
    for reason in reasons:
      logging.info("DiffusionEvaluator: %s", reason)

    results = _json_safe({
        "candidate": candidate_metrics,
        "baseline": baseline_metrics,
        "reference": metrics_lib.REFERENCE_DENOISING,
        "blessing": {"blessed": blessed, "reasons": reasons},
        "eval_config": config.to_dict(),
        "models": {
            "candidate": {"uri": candidate.uri, "id": candidate.id},
            "baseline": None if baseline is None else {
                "uri": baseline.uri, "id": baseline.id, "same_as_candidate": same_as_candidate},
            "classifier": {"uri": classifier.uri, "id": classifier.id},
        },
        "data": {
            "examples_uri": examples[0].uri,
            "num_eval_images": int(len(eval_images)),
            "num_train_images": int(len(train_images)),
            "timings_s": timings,
        },
    })
    io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_FILE_NAME),
                               json.dumps(results, indent=2, sort_keys=True))
    grid = report.sample_grid(_grid_images(candidate_model, samples, config))
    io_utils.write_bytes_file(os.path.join(evaluation.uri, SAMPLE_GRID_FILE_NAME),
                              report.png_bytes(grid))
    io_utils.write_string_file(os.path.join(evaluation.uri, REPORT_FILE_NAME),
                               report.render_markdown(results))
    for name, (section, key) in _EVALUATION_PROPERTIES.items():
      value = results["candidate"][section][key]
      if value is not None:
        evaluation.set_float_custom_property(name, value)
    evaluation.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, int(blessed))
    logging.info("DiffusionEvaluator: results written to %s", evaluation.uri)

    _write_blessing(blessing, candidate, baseline, blessed, reasons, exec_properties)
