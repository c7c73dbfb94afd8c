"""Metrics of the denoising evaluation in TFMA, loaded by module path.

TFMA loads them with `tfma.MetricConfig(class_name=..., module=<this module>)`, so this module must
stay importable in the process that runs TFMA. Labels are the clean images and predictions the
denoised ones, flat (784 values per example) or not, in [0, max_val].

- PerImagePSNR (a TFMA metric): PSNR of one image = 10 * log10(max_val^2 / MSE of that image),
  which is what tf.image.psnr(max_val) computes; the metric is the mean over images, each capped at
  `cap_db` (an exact reconstruction has infinite PSNR) like metrics.denoising_metrics, so TFMA and
  the numpy path report the same number. Accumulated in float64.
- ImageMeanSquaredError: tf_keras's MeanSquaredError (mean over the pixels of an image, then over
  images: the MSE over all pixels, all images having the same size) under another class name.
  TFMA 0.47 swaps a metric named "MeanSquaredError" for its own Python implementation, which loops
  over every pixel of every example (about 37 s per 1,000 MNIST images on 2 cores); the tf_keras one
  runs batched in TensorFlow.
"""

import dataclasses
import math
from typing import Dict, Iterable, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.proto import config_pb2
import tf_keras

from components.diffusion_evaluator.metrics import PSNR_CAP_DB

PSNR_NAME = "psnr"


class ImageMeanSquaredError(tf_keras.metrics.MeanSquaredError):
  """tf_keras.metrics.MeanSquaredError, named so that TFMA keeps the tf_keras implementation."""


def image_psnr(label: np.ndarray, prediction: np.ndarray, max_val: float = 1.0,
               cap_db: float = PSNR_CAP_DB) -> float:
  """PSNR (dB) of one image: 10 * log10(max_val^2 / MSE), capped at `cap_db`; NaN stays NaN."""
  label = np.asarray(label, np.float64)
  prediction = np.asarray(prediction, np.float64)
  if label.shape != prediction.shape:
    raise ValueError(f"Shape mismatch: label {label.shape} vs prediction {prediction.shape}")
  mse = float(np.mean(np.square(prediction - label)))
  if math.isnan(mse):
    return mse
  psnr = math.inf if mse == 0.0 else 10.0 * math.log10(max_val * max_val / mse)
  return min(psnr, cap_db)


class PerImagePSNR(metric_types.Metric):
  """Mean over examples of the per-image PSNR between label (clean) and prediction (denoised)."""

  def __init__(self, name: str = PSNR_NAME, max_val: float = 1.0,
               cap_db: float = PSNR_CAP_DB):
    super().__init__(metric_util.merge_per_key_computations(_psnr_computations), name=name,
                     max_val=max_val, cap_db=cap_db)


def _psnr_computations(name: str = PSNR_NAME,
                       eval_config: Optional[config_pb2.EvalConfig] = None,
                       model_name: str = "",
                       output_name: str = "",
                       example_weighted: bool = False,
                       max_val: float = 1.0,
                       cap_db: float = PSNR_CAP_DB) -> metric_types.MetricComputations:
  key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                               example_weighted=example_weighted)
  return [metric_types.MetricComputation(
      keys=[key], preprocessors=None,
      combiner=_PSNRCombiner(key, eval_config, example_weighted, max_val, cap_db))]


@dataclasses.dataclass
class _Accumulator:
  weighted_psnr: float = 0.0
  total_weight: float = 0.0


class _PSNRCombiner(beam.CombineFn):
  """Sums weight * per-image PSNR and the weights; the output is their ratio."""

  def __init__(self, key: metric_types.MetricKey, eval_config: Optional[config_pb2.EvalConfig],
               example_weighted: bool, max_val: float, cap_db: float):
    self._key = key
    self._eval_config = eval_config
    self._example_weighted = example_weighted
    self._max_val = max_val
    self._cap_db = cap_db

  def create_accumulator(self) -> _Accumulator:
    return _Accumulator()

  def add_input(self, accumulator: _Accumulator,
                element: metric_types.StandardMetricInputs) -> _Accumulator:
    for label, prediction, example_weight in metric_util.to_label_prediction_example_weight(
        element, eval_config=self._eval_config, model_name=self._key.model_name,
        output_name=self._key.output_name, example_weighted=self._example_weighted,
        flatten=False, squeeze=False):
      weight = float(metric_util.safe_to_scalar(example_weight))
      accumulator.weighted_psnr += weight * image_psnr(label, prediction, self._max_val,
                                                       self._cap_db)
      accumulator.total_weight += weight
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
    accumulators = iter(accumulators)
    result = next(accumulators)
    for accumulator in accumulators:
      result.weighted_psnr += accumulator.weighted_psnr
      result.total_weight += accumulator.total_weight
    return result

  def extract_output(self, accumulator: _Accumulator) -> Dict[metric_types.MetricKey, float]:
    if accumulator.total_weight == 0.0:
      return {self._key: float("nan")}
    return {self._key: accumulator.weighted_psnr / accumulator.total_weight}


metric_types.register_metric(PerImagePSNR)
