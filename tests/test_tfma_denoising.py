"""The reference denoising protocol through TFMA (components/diffusion_evaluator/tfma_denoising.py)
equals the numpy path, overall and per digit; the custom PSNR metric on known inputs."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.metrics import metric_types

from components.diffusion_evaluator import evaluation
from components.diffusion_evaluator import metrics
from components.diffusion_evaluator import tfma_denoising
from components.diffusion_evaluator import tfma_metrics
from tests.support import fake_models

# TFMA's Beam pipeline on a real export: the slow tier.
pytestmark = pytest.mark.slow

SIGMA, SEED = 0.4, 0
NUM_IMAGES = 30
# Smaller than NUM_IMAGES and not a divisor of it: TFMA's batches differ from the numpy path's
# and the last one is partial.
BATCH_SIZE = 8
LABELS = np.arange(NUM_IMAGES) % 7  # digits 0..6 only: slices exist for the labels present


def _clean_images() -> np.ndarray:
  """Noisy digit blocks in [0, 1] with many pixels exactly on 0 and 1 (the un-clipping path)."""
  rng = np.random.default_rng(1)
  images = fake_models.digit_templates()[LABELS]
  images = images + 0.3 * rng.standard_normal(images.shape) * (rng.random(images.shape) < 0.2)
  return np.clip(images, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def protocol(smoke_export_dir, tmp_path_factory):
  """The numpy path's denoised images and TFMA's results on the seeded smoke-profile model."""
  clean = _clean_images()
  model = evaluation.DiffusionModel(smoke_export_dir, BATCH_SIZE)
  assert model.batch_size == BATCH_SIZE
  denoised = model.denoise(metrics.add_noise(clean, SIGMA, SEED), SIGMA)
  root = tmp_path_factory.mktemp("tfma_denoising")
  work_dir = str(root / "work")
  os.makedirs(work_dir)
  output_path = str(root / "tfma")
  result = tfma_denoising.run(model.loaded, clean, LABELS, SIGMA, SEED, BATCH_SIZE, output_path,
                              work_dir=work_dir)
  return {"clean": clean, "denoised": denoised, "result": result, "work_dir": work_dir,
          "output_path": output_path}


def _assert_close(tfma_values, numpy_values, count):
  for key in ("mse", "rmse", "psnr"):
    assert tfma_values[key] == pytest.approx(numpy_values[key], rel=1e-5, abs=0), key
  assert tfma_values["num_images"] == count


def test_overall_metrics_equal_the_numpy_path(protocol):
  expected = metrics.denoising_metrics(protocol["clean"], protocol["denoised"])
  _assert_close(protocol["result"]["overall"], expected, NUM_IMAGES)
  assert protocol["result"]["output_path"] == protocol["output_path"]


def test_per_digit_slices_equal_the_numpy_path_on_their_subsets(protocol):
  per_class = protocol["result"]["per_class"]
  assert list(per_class) == [str(digit) for digit in range(7)]
  for digit, values in per_class.items():
    subset = LABELS == int(digit)
    expected = metrics.denoising_metrics(protocol["clean"][subset], protocol["denoised"][subset])
    _assert_close(values, expected, int(subset.sum()))


def test_result_loads_with_tfma(protocol):
  result = tfma.load_eval_result(protocol["output_path"])
  slices = {slice_key for slice_key, _ in result.slicing_metrics}
  assert () in slices and (("label", 3),) in slices
  overall = result.get_metrics_for_slice()
  assert overall["psnr"]["doubleValue"] == pytest.approx(protocol["result"]["overall"]["psnr"])
  assert set(overall) == {"mse", "rmse", "psnr", "example_count"}


def test_wrapper_model_denoises_each_example_as_the_numpy_path_whatever_the_batching(protocol):
  """Examples in any order and any batch split give the same images (per-image un-clipping)."""
  records = [record.numpy() for record in tf.data.TFRecordDataset(
      os.path.join(protocol["work_dir"], tfma_denoising.EXAMPLES_FILE_NAME))]
  serve = tf.saved_model.load(os.path.join(protocol["work_dir"], "model")).signatures[
      "serving_default"]
  order = np.random.default_rng(0).permutation(NUM_IMAGES)
  denoised = np.zeros((NUM_IMAGES, tfma_denoising.NUM_PIXELS), np.float32)
  for chunk in np.split(order, [1, 12, 13]):  # sizes 1, 11, 1, 17
    outputs = serve(examples=tf.constant([records[index] for index in chunk]))
    denoised[chunk] = outputs[tfma_denoising.OUTPUT_KEY].numpy()
  np.testing.assert_allclose(denoised, protocol["denoised"].reshape(NUM_IMAGES, -1), atol=1e-5)


def test_examples_carry_the_protocols_noisy_input_clean_label_image_and_digit(protocol):
  parsed = [tf.train.Example.FromString(record.numpy()) for record in tf.data.TFRecordDataset(
      os.path.join(protocol["work_dir"], tfma_denoising.EXAMPLES_FILE_NAME))]
  labels = [example.features.feature["label"].int64_list.value[0] for example in parsed]
  assert labels == LABELS.tolist()
  first = parsed[0].features.feature
  np.testing.assert_array_equal(np.array(first["image"].float_list.value),
                                protocol["clean"][0].reshape(-1))
  np.testing.assert_array_equal(np.array(first["noisy_image"].float_list.value),
                                metrics.add_noise(protocol["clean"][:1], SIGMA, SEED).reshape(-1))


# The custom metric on known inputs.


def test_image_psnr_of_known_errors():
  clean = np.zeros(784, np.float32)
  assert tfma_metrics.image_psnr(clean, clean + 0.1) == pytest.approx(20.0)  # MSE 0.01
  assert tfma_metrics.image_psnr(clean, clean + 0.01) == pytest.approx(40.0)  # MSE 1e-4
  assert tfma_metrics.image_psnr(clean, clean) == metrics.PSNR_CAP_DB  # infinite -> capped
  assert math.isnan(tfma_metrics.image_psnr(clean, np.full(784, np.nan)))
  assert tfma_metrics.image_psnr(clean, clean + 0.2, max_val=2.0) == pytest.approx(
      10 * math.log10(4.0 / 0.04))
  with pytest.raises(ValueError):
    tfma_metrics.image_psnr(clean, clean[:10])


def test_image_psnr_matches_tf_image_psnr():
  rng = np.random.default_rng(0)
  a = rng.random((28, 28, 1)).astype(np.float32)
  b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
  expected = float(tf.image.psnr(a, b, max_val=1.0))
  assert tfma_metrics.image_psnr(a.reshape(-1), b.reshape(-1)) == pytest.approx(expected, rel=1e-6)


def _metric_inputs(label, prediction, weight=1.0):
  return metric_types.StandardMetricInputs(
      labels=np.asarray(label, np.float32), predictions=np.asarray(prediction, np.float32),
      example_weights=np.asarray([weight], np.float32))


def test_psnr_metric_averages_per_image_psnr():
  computations = tfma_metrics.PerImagePSNR().computations()
  assert len(computations) == 1
  key = computations[0].keys[0]
  assert key.name == "psnr"
  combiner = computations[0].combiner
  zeros = np.zeros(784)
  accumulator = combiner.create_accumulator()
  accumulator = combiner.add_input(accumulator, _metric_inputs(zeros, zeros + 0.1))  # 20 dB
  other = combiner.add_input(combiner.create_accumulator(),
                             _metric_inputs(zeros, zeros + 0.01))  # 40 dB
  other = combiner.add_input(other, _metric_inputs(zeros, zeros))  # identical: capped at 100 dB
  merged = combiner.merge_accumulators([accumulator, other])
  assert combiner.extract_output(merged)[key] == pytest.approx((20.0 + 40.0 + 100.0) / 3)
  assert math.isnan(combiner.extract_output(combiner.create_accumulator())[key])


def test_psnr_metric_loads_by_module_path():
  config = tfma_denoising.eval_config()
  psnr_configs = [metric for metric in config.metrics_specs[0].metrics
                  if metric.class_name == "PerImagePSNR"]
  assert len(psnr_configs) == 1 and psnr_configs[0].module == tfma_metrics.__name__
  assert isinstance(metric_specs.metric_instance(psnr_configs[0], {}), tfma_metrics.PerImagePSNR)
