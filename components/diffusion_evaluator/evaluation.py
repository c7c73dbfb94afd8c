"""The evaluation protocol on SavedModel directories and arrays, with no TFX in sight.

The DiffusionEvaluator's executor adapts TFX artifacts to these functions; the benchmarks
(benchmarks/quality.py) call them directly, so both measure exactly the same thing.
"""

import contextlib
import hashlib
import math
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from components.diffusion_evaluator import metrics as metrics_lib
from core import serving_contract
from core.config import EvalConfig
from core.config import IMAGE_KEY
from core.config import IMAGE_SIZE
from core.config import LABEL_KEY
from core.config import NUM_CLASSES

# Judge: images [N, 28, 28, 1] in [0, 1] -> (predicted classes [N], features [N, D]).
JudgeFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


@contextlib.contextmanager
def timed(what: str, timings: Dict[str, float], key: str) -> Iterator[None]:
  logging.info("DiffusionEvaluator: %s ...", what)
  start = time.monotonic()
  yield
  timings[key] = round(time.monotonic() - start, 3)
  logging.info("DiffusionEvaluator: %s took %.1f s", what, timings[key])


def read_split_dir(split_uri: str, limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """The first `limit` (None = all) examples of one split directory of gzip TFRecords (ExampleGen's
  Split-<name>) in content order (`content_order`): images [N, 28, 28, 1] in [0, 1], labels [N]."""
  files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*.gz")))
  if not files:
    raise ValueError(f"No *.gz TFRecord files in {split_uri}")
  feature_spec = {
      IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_SIZE * IMAGE_SIZE], tf.int64),
      LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
  }
  dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
  dataset = dataset.batch(1024).map(lambda records: tf.io.parse_example(records, feature_spec))
  images, labels = [], []
  for batch in dataset.as_numpy_iterator():
    images.append(batch[IMAGE_KEY].astype(np.uint8))  # pixels are 0..255
    labels.append(batch[LABEL_KEY])
  if not images:
    raise ValueError(f"Split at {split_uri} has no examples")
  images = np.concatenate(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)
  labels = np.concatenate(labels).astype(np.int32)
  order = content_order(images, labels)[:limit]
  return images[order].astype(np.float32) / 255.0, labels[order]


def content_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Indices that sort examples by a hash of their label and pixels.

  TFX's ExampleGen reshuffles the records of a split as it writes them, so the same examples come
  out in another order from one run to the next. Every subset taken by position (`limit`,
  `pick`) would then differ between two runs of the same model; in this order it depends on the
  examples alone.
  """
  keys = [hashlib.sha256(np.int32(label).tobytes() + image.tobytes()).digest()
          for image, label in zip(images, labels)]
  return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def batches(count: int, batch_size: int) -> Iterator[Tuple[int, slice]]:
  for index, start in enumerate(range(0, count, batch_size)):
    yield index, slice(start, min(start + batch_size, count))


class DiffusionModel:
  """The diffusion SavedModel's two signatures, called in batches, and the sampler settings it
  records (serving_contract.recorded_sampler_config): a request that leaves steps and guidance to
  the model gets the recorded defaults, and so does the Evaluator."""

  def __init__(self, saved_model_dir: str, batch_size: int):
    logging.info("DiffusionEvaluator: loading diffusion model %s", saved_model_dir)
    # Keep the loaded object: its signatures hold only weak references to the variables.
    self._loaded = tf.saved_model.load(saved_model_dir)
    self._sample = self._loaded.signatures[serving_contract.SERVING_SIGNATURE]
    self._denoise = self._loaded.signatures[serving_contract.DENOISE_SIGNATURE]
    self.sampler_config = serving_contract.recorded_sampler_config(self._loaded, saved_model_dir)
    # The exported sampler rejects requests above its max_batch.
    self._batch_size = min(batch_size, self.sampler_config.max_batch)

  def sample(self, labels: np.ndarray, seed: int, guidance_scale: Optional[float] = None,
             num_steps: Optional[int] = None) -> np.ndarray:
    """Float images [N, 28, 28, 1] in [0, 1]; batch i is drawn with seed `seed + i`. Steps and
    guidance default to the model's own."""
    recorded = self.sampler_config
    guidance_scale = recorded.guidance_scale if guidance_scale is None else guidance_scale
    num_steps = recorded.num_steps if num_steps is None else num_steps
    images = []
    for index, rows in batches(len(labels), self._batch_size):
      outputs = self._sample(**{
          serving_contract.LABELS: tf.constant(labels[rows], tf.int32),
          serving_contract.GUIDANCE_SCALE: tf.constant(guidance_scale, tf.float32),
          serving_contract.NUM_STEPS: tf.constant(num_steps, tf.int32),
          serving_contract.SEED: tf.constant(seed + index, tf.int32)})
      images.append(outputs[serving_contract.IMAGES_FLOAT_OUTPUT].numpy())
    return np.concatenate(images).astype(np.float32)

  def denoise(self, noisy: np.ndarray, sigma: float) -> np.ndarray:
    denoised = []
    for _, rows in batches(len(noisy), self._batch_size):
      outputs = self._denoise(**{
          serving_contract.NOISY_IMAGES: tf.constant(noisy[rows], tf.float32),
          serving_contract.NOISE_SIGMA: tf.constant(sigma, tf.float32)})
      denoised.append(outputs[serving_contract.DENOISED_IMAGES_OUTPUT].numpy())
    return np.concatenate(denoised).astype(np.float32)

  @property
  def batch_size(self) -> int:
    """Images per call of the signatures (the `denoise` un-clipping draws depend on it)."""
    return self._batch_size

  @property
  def loaded(self):
    """The loaded SavedModel object."""
    return self._loaded

  @property
  def sampler(self) -> str:
    """The sampler fixed at export ("ddim", "dpmpp_2m", "ancestral")."""
    return self.sampler_config.sampler

  @property
  def guidance_sigma_interval(self) -> List[Optional[float]]:
    """[min, max] noise levels where the exported sampler applies guidance above 1 (max None =
    no bound)."""
    return [self.sampler_config.guidance_min_sigma, self.sampler_config.guidance_max_sigma]


class Judge:
  """The classifier SavedModel: predicted classes and penultimate features, in batches."""

  def __init__(self, saved_model_dir: str, batch_size: int):
    logging.info("DiffusionEvaluator: loading classifier %s", saved_model_dir)
    self._loaded = tf.saved_model.load(saved_model_dir)
    self._classify = self._loaded.signatures["serving_default"]
    self._batch_size = batch_size

  def __call__(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    predicted, features = [], []
    for _, rows in batches(len(images), self._batch_size):
      outputs = self._classify(images=tf.constant(images[rows], tf.float32))
      predicted.append(np.argmax(outputs["logits"].numpy(), axis=-1))
      features.append(outputs["features"].numpy())
    return np.concatenate(predicted).astype(np.int32), np.concatenate(features)


class RealData:
  """Eval-split images and what every model is compared against (computed once, shared)."""

  def __init__(self, eval_images: np.ndarray, eval_features: np.ndarray,
               train_features: np.ndarray, seed: int,
               judge_accuracy: Optional[Dict[str, Any]] = None):
    self.eval_images = eval_images
    self.eval_features = eval_features  # judge features of `num_images` eval images
    self.num_images = len(eval_features)
    self.frechet_floor = metrics_lib.frechet_distance(train_features, eval_features)
    self.kid_floor = metrics_lib.kernel_inception_distance(train_features, eval_features, seed=seed)
    # The agreement counterpart of the floor: the share of those eval images the judge labels
    # as their true class, what samples as varied as real digits would score (None: no labels).
    self.judge_accuracy = judge_accuracy

  @classmethod
  def from_images(cls, eval_images: np.ndarray, train_images: np.ndarray, judge: JudgeFn,
                  num_samples: int, seed: int,
                  eval_labels: Optional[np.ndarray] = None) -> "RealData":
    """Real-vs-real floor: as many train images as samples, against as many eval images; with
    `eval_labels`, also the judge's accuracy on those eval images."""
    num_fid = min(num_samples, len(eval_images), len(train_images))
    picked_eval = pick(num_fid, len(eval_images), seed)
    eval_predicted, eval_features = judge(eval_images[picked_eval])
    train_features = judge(train_images[pick(num_fid, len(train_images), seed)])[1]
    judge_accuracy = None
    if eval_labels is not None:
      judge_accuracy = metrics_lib.class_agreement(eval_predicted, eval_labels[picked_eval])
    return cls(eval_images, eval_features, train_features, seed, judge_accuracy)


def pick(count: int, available: int, seed: int) -> np.ndarray:
  """Indices of a seeded random subset of size `count` (all, in order, when count == available)."""
  if count >= available:
    return np.arange(available)
  return np.sort(np.random.default_rng(seed).choice(available, count, replace=False))


def sample_labels(config: EvalConfig) -> np.ndarray:
  return np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), config.samples_per_class)


def denoising_metrics(model: DiffusionModel, real: RealData, config: EvalConfig,
                      timings: Dict[str, float], denoising: Optional[Dict[str, Any]] = None
                      ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
  """The reference protocol at `denoise_sigma` (unless given: `denoising`, computed by TFMA's
  Beam pipeline on the same images), and the PSNR-vs-noise curve."""
  eval_images = real.eval_images
  if denoising is None:
    clean = eval_images[:config.denoise_num_images]  # None = all
    with timed(f"reference denoising at sigma {config.denoise_sigma} on {len(clean)} images",
               timings, "denoising"):
      noisy = metrics_lib.add_noise(clean, config.denoise_sigma, config.seed)
      denoising = metrics_lib.denoising_metrics(clean, model.denoise(noisy, config.denoise_sigma))
      denoising = {"sigma": config.denoise_sigma, **denoising}
  logging.info("DiffusionEvaluator: MSE %.5f, RMSE %.4f, PSNR %.2f dB (reference: %s)",
               denoising["mse"], denoising["rmse"], denoising["psnr"],
               metrics_lib.REFERENCE_DENOISING)

  curve = []
  with timed(f"PSNR-vs-noise curve at sigmas {config.denoise_curve_sigmas}", timings,
             "denoising_curve"):
    clean = eval_images[:config.denoise_curve_num_images]
    for sigma in config.denoise_curve_sigmas:
      noisy = metrics_lib.add_noise(clean, sigma, config.seed)
      point = metrics_lib.denoising_metrics(clean, model.denoise(noisy, sigma))
      curve.append({"sigma": sigma, **point})
  return denoising, curve


def sampling_metrics(model: DiffusionModel, judge: JudgeFn, real: RealData, config: EvalConfig,
                     timings: Dict[str, float], guidance_scale: Optional[float] = None,
                     num_steps: Optional[int] = None) -> Tuple[Dict[str, Any], np.ndarray]:
  """Guided samples, judged: agreement, Frechet and KID. Steps and guidance default to the
  model's own (what a request that leaves them out gets)."""
  labels = sample_labels(config)
  guidance_scale = model.sampler_config.guidance_scale if guidance_scale is None else guidance_scale
  num_steps = model.sampler_config.num_steps if num_steps is None else num_steps
  with timed(f"{len(labels)} guided samples ({num_steps} steps, guidance {guidance_scale})",
             timings, "sampling"):
    samples = model.sample(labels, config.seed, guidance_scale, num_steps)

  with timed("judging the samples", timings, "judging"):
    predicted, sample_features = judge(samples)
    agreement = metrics_lib.class_agreement(predicted, labels)
    picked = pick(real.num_images, len(samples), config.seed)
    frechet = metrics_lib.frechet_distance(sample_features[picked], real.eval_features)
    kid = metrics_lib.kernel_inception_distance(sample_features[picked], real.eval_features,
                                                seed=config.seed)
  logging.info("DiffusionEvaluator: class agreement %.3f, Frechet %.3f (floor %.3f)",
               agreement["overall"], frechet, real.frechet_floor)
  return {
      "sampling": {
          "samples_per_class": config.samples_per_class,
          "num_samples": int(len(labels)),
          "num_steps": num_steps,
          "guidance_scale": guidance_scale,
          # Fixed at export, so part of the model rather than of the request: recorded so that a
          # comparison of two models says how each one sampled.
          "sampler": model.sampler,
          "guidance_sigma_interval": model.guidance_sigma_interval,
          "batch_size": config.batch_size,
          "seed": config.seed,
      },
      "class_agreement": agreement,
      "judge_accuracy_on_eval": real.judge_accuracy,
      "frechet": {
          "num_images": real.num_images,
          "distance": frechet,
          "real_floor": real.frechet_floor,
          "ratio": frechet / real.frechet_floor if real.frechet_floor > 0 else None,
          "kid": kid,
          "kid_real_floor": real.kid_floor,
      },
  }, samples


def evaluate_model(model: DiffusionModel, judge: JudgeFn, real: RealData, config: EvalConfig,
                   denoising: Optional[Dict[str, Any]] = None,
                   timings: Optional[Dict[str, float]] = None
                   ) -> Tuple[Dict[str, Any], np.ndarray]:
  """One diffusion model's metrics under the fixed protocol and seeds, and its samples.
  `denoising`: the reference protocol's numbers when already computed (by TFMA); `timings`: the
  timings so far, added to."""
  timings = {} if timings is None else timings
  denoising, curve = denoising_metrics(model, real, config, timings, denoising)
  sampled, samples = sampling_metrics(model, judge, real, config, timings)
  model_metrics = {"denoising": denoising, "denoising_curve": curve, **sampled,
                   "timings_s": timings}
  return model_metrics, samples


def grid_images(model: DiffusionModel, samples: np.ndarray, config: EvalConfig,
                guidance_scale: Optional[float] = None,
                num_steps: Optional[int] = None) -> np.ndarray:
  """[10, grid_seeds, 28, 28, 1]: the scored samples when there are enough, else fresh ones drawn
  at `guidance_scale` and `num_steps` (default: the model's own)."""
  if config.samples_per_class >= config.grid_seeds:
    per_digit = samples.reshape(NUM_CLASSES, config.samples_per_class, *samples.shape[1:])
    return per_digit[:, :config.grid_seeds]
  labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), config.grid_seeds)
  grid = model.sample(labels, config.seed, guidance_scale, num_steps)
  return grid.reshape(NUM_CLASSES, config.grid_seeds, *grid.shape[1:])


def json_safe(value: Any) -> Any:
  """Replaces non-finite floats by None (strict JSON) and numpy scalars by Python ones."""
  if isinstance(value, dict):
    return {key: json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(item) for item in value]
  if isinstance(value, (np.floating, float)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value
