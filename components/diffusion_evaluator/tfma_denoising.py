"""The reference denoising protocol computed by TensorFlow Model Analysis, sliced per digit.

The same numbers as the numpy path (evaluation.denoising_metrics), from TFMA:
  1. a TFRecord of tf.Examples: `noisy_image` (the protocol's noisy input, made by the same
     metrics.add_noise call), `image` (the clean image, flat: TFMA's label), `label` (the digit:
     the slicing feature);
  2. a wrapper SavedModel whose `serving_default` takes serialized tf.Examples, parses
     `noisy_image`, calls the diffusion model's `denoise` signature at the protocol's sigma and
     returns the denoised images flat [N, 784]; pure TensorFlow ops;
  3. TFMA's Beam pipeline, on the runner of the caller's pipeline (the executor passes the
     component's beam_pipeline_args; in-memory DirectRunner by default), with label_key "image",
     slices overall and by `label`, and the metrics MSE and RMSE (tf_keras; see
     tfma_metrics.ImageMeanSquaredError), the mean per-image PSNR (tfma_metrics.PerImagePSNR) and
     the example count. The model runs in the Beam workers, so the work scales with the runner;
     the driver only draws the noise and writes the examples;
  4. the result read back with tfma.load_eval_result.

The wrapper needs nothing to line its batches up with the numpy path's: `denoise` un-clips each
pixel on its own (trainer_module/clipped_noise.py) and the network treats every row on its own,
so an image is denoised the same in any batch TFMA forms.
"""

import math
import os
import tempfile
from typing import Any, Callable, Dict, Optional, Union

from absl import logging
import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx_bsl.tfxio import tf_example_record

from components.diffusion_evaluator import metrics as metrics_lib
from components.diffusion_evaluator import tfma_metrics
from core.config import IMAGE_KEY
from core.config import IMAGE_SIZE
from core.config import LABEL_KEY

NOISY_IMAGE_KEY = "noisy_image"
OUTPUT_KEY = "denoised_images"
EXAMPLES_FILE_NAME = "denoising_examples.tfrecord"
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE

# Metric names in TFMA's output: MSE and RMSE from tf_keras, PSNR from tfma_metrics.
MSE_NAME = "mse"
RMSE_NAME = "rmse"
PSNR_NAME = tfma_metrics.PSNR_NAME
_RESULT_NAMES = {"mse": MSE_NAME, "rmse": RMSE_NAME, "psnr": PSNR_NAME}


def _float_feature(values: np.ndarray) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=values.reshape(-1)))


def _int_feature(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def write_examples(path: str, clean: np.ndarray, noisy: np.ndarray, labels: np.ndarray) -> None:
  """One tf.Example per image: noisy_image and image (clean), flat floats, and label."""
  clean = np.asarray(clean, np.float32)
  noisy = np.asarray(noisy, np.float32)
  labels = np.asarray(labels).reshape(-1)
  if not clean.shape == noisy.shape or clean.shape[0] != labels.shape[0]:
    raise ValueError(f"Shape mismatch: clean {clean.shape}, noisy {noisy.shape}, "
                     f"labels {labels.shape}")
  with tf.io.TFRecordWriter(path) as writer:
    for index in range(clean.shape[0]):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          NOISY_IMAGE_KEY: _float_feature(noisy[index]),
          IMAGE_KEY: _float_feature(clean[index]),
          LABEL_KEY: _int_feature(int(labels[index])),
      })).SerializeToString())


class ExampleDenoiser(tf.Module):
  """serving_default: serialized tf.Examples -> the diffusion model's `denoise`, flat outputs."""

  def __init__(self, diffusion_model: Union[str, Any], noise_sigma: float):
    """diffusion_model: a SavedModel directory, or the object tf.saved_model.load returned."""
    super().__init__(name="tfma_denoiser")
    loaded = (tf.saved_model.load(diffusion_model) if isinstance(diffusion_model, str)
              else diffusion_model)
    denoise = loaded.signatures["denoise"]
    # Only the `denoise` function and its variables are saved with the wrapper, not the whole
    # diffusion model (its sampler makes loading slow). The lambda keeps `loaded` alive untracked.
    self.denoise_variables = list(denoise.variables)
    self._denoise_fn = lambda noisy_images, noise_sigma, _loaded=loaded: denoise(
        noisy_images=noisy_images, noise_sigma=noise_sigma)
    self.noise_sigma = tf.Variable(noise_sigma, trainable=False, dtype=tf.float32)

  def _denoise(self, noisy_images):
    return self._denoise_fn(noisy_images, self.noise_sigma)["denoised_images"]

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None], tf.string, name="examples")])
  def serving_default(self, examples):
    parsed = tf.io.parse_example(examples, {
        NOISY_IMAGE_KEY: tf.io.FixedLenFeature([NUM_PIXELS], tf.float32)})
    noisy = tf.reshape(parsed[NOISY_IMAGE_KEY], [-1, IMAGE_SIZE, IMAGE_SIZE, 1])
    return {OUTPUT_KEY: tf.reshape(self._denoise(noisy), [-1, NUM_PIXELS])}


def save_wrapper_model(diffusion_model: Union[str, Any], export_dir: str,
                       noise_sigma: float) -> str:
  """Saves the ExampleDenoiser of `diffusion_model` (a directory or a loaded SavedModel)."""
  module = ExampleDenoiser(diffusion_model, noise_sigma)
  tf.saved_model.save(module, export_dir, signatures={
      "serving_default": module.serving_default.get_concrete_function()})
  return export_dir


def eval_config() -> tfma.EvalConfig:
  """Label = the clean image, prediction = the wrapper's output; overall and per-digit slices."""
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=IMAGE_KEY,
                                  prediction_key=OUTPUT_KEY, model_type=tfma.TF_GENERIC)],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[LABEL_KEY])],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name="ExampleCount"),
          tfma.MetricConfig(class_name=tfma_metrics.ImageMeanSquaredError.__name__,
                            module=tfma_metrics.__name__, config=f'"name": "{MSE_NAME}"'),
          tfma.MetricConfig(class_name="RootMeanSquaredError", config=f'"name": "{RMSE_NAME}"'),
          tfma.MetricConfig(class_name=tfma_metrics.PerImagePSNR.__name__,
                            module=tfma_metrics.__name__),
      ])])


def read_results(output_path: str) -> Dict[str, Any]:
  """{overall: {mse, rmse, psnr, num_images}, per_class: {"<digit>": {...}}} from TFMA's output."""
  result = tfma.load_eval_result(output_path)
  overall, per_class = None, {}
  for slice_key, slice_metrics in result.slicing_metrics:
    values = slice_metrics[""][""]  # single output, no sub key

    def number(name):
      return float(values[name]["doubleValue"]) if name in values else None

    entry = {key: number(name) for key, name in _RESULT_NAMES.items()}
    count = number("example_count")
    entry["num_images"] = None if count is None else int(count)
    if not slice_key:
      overall = entry
    elif len(slice_key) == 1 and slice_key[0][0] == LABEL_KEY:
      per_class[str(int(slice_key[0][1]))] = entry
  if overall is None:
    raise ValueError(f"No overall slice in the TFMA result at {output_path}")
  return {"overall": overall,
          "per_class": {key: per_class[key] for key in sorted(per_class, key=int)}}


def in_memory_pipeline() -> beam.Pipeline:
  """A Beam pipeline on the in-memory DirectRunner, one worker."""
  return beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(
      ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]))


def run(diffusion_model: Union[str, Any], clean: np.ndarray, labels: np.ndarray, sigma: float,
        seed: int, batch_size: int, output_path: str,
        work_dir: Optional[str] = None,
        make_pipeline: Callable[[], beam.Pipeline] = in_memory_pipeline) -> Dict[str, Any]:
  """Runs the protocol through TFMA; returns read_results(output_path) plus output_path.

  Args:
    diffusion_model: the diffusion SavedModel (with a `denoise` signature): its directory, or the
      object tf.saved_model.load returned (saves loading it again).
    clean: images [N, 28, 28, 1] in [0, 1]; labels: their digits [N].
    sigma, seed: the protocol's noise (metrics.add_noise(clean, sigma, seed)).
    batch_size: how many examples TFMA reads (and `denoise` takes) at a time.
    output_path: where TFMA writes its results (loadable with tfma.load_eval_result).
    work_dir: where the examples and the wrapper model go (a temporary directory by default,
      deleted afterwards). The Beam workers read them: on a cluster, storage they all reach.
    make_pipeline: returns the Beam pipeline TFMA runs in (the executor's _make_beam_pipeline,
      which applies the component's beam_pipeline_args).
  """
  if work_dir is None:
    with tempfile.TemporaryDirectory(prefix="tfma_denoising_") as temp_dir:
      return run(diffusion_model, clean, labels, sigma, seed, batch_size, output_path, temp_dir,
                 make_pipeline)
  noisy = metrics_lib.add_noise(clean, sigma, seed)
  data_path = os.path.join(work_dir, EXAMPLES_FILE_NAME)
  write_examples(data_path, clean, noisy, labels)
  model_dir = save_wrapper_model(diffusion_model, os.path.join(work_dir, "model"), sigma)
  config = eval_config()
  shared_model = tfma.default_eval_shared_model(eval_saved_model_path=model_dir,
                                                eval_config=config)
  tfx_io = tf_example_record.TFExampleRecord(file_pattern=data_path,
                                             raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
  logging.info("DiffusionEvaluator: TFMA denoising on %d images -> %s", len(clean), output_path)
  with make_pipeline() as pipeline:
    _ = (pipeline
         | "ReadExamples" >> tfx_io.BeamSource(batch_size=batch_size)
         | "ExtractEvaluateAndWriteResults" >> tfma.ExtractEvaluateAndWriteResults(
             eval_shared_model=shared_model, eval_config=config, output_path=output_path))
  results = read_results(output_path)
  results["output_path"] = output_path
  for key in ("mse", "rmse", "psnr"):
    value = results["overall"][key]
    if value is None or not math.isfinite(value):
      logging.warning("DiffusionEvaluator: TFMA %s is %s", key, value)
  return results
