"""Tests of trainer_module/export.py on the seeded tiny U-Net, exported once per module (~20 s)."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from core import serving_contract
from tests.support import tiny_models
from trainer_module import export

# Real exports of the tiny sampler, traced and called: the slow tier (the fast tier exports
# once, in conftest's smoke_export_dir).
pytestmark = pytest.mark.slow

_SAMPLER = tiny_models.TINY_SAMPLER  # num_steps 3, max_steps 16, max_batch 4, chunks of 3 rows
_PY_FUNC_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "NumpyFunction"}

# Runs in a fresh interpreter with only TensorFlow: the served model must not need this project.
_FRESH_PROCESS_SCRIPT = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf

loaded = tf.saved_model.load(sys.argv[1])
samples = loaded.signatures["serving_default"](
    labels=tf.constant([1, 10]), guidance_scale=tf.constant(1.5), num_steps=tf.constant(2),
    seed=tf.constant(0))
denoised = loaded.signatures["denoise"](
    noisy_images=tf.fill([3, 28, 28, 1], 0.5), noise_sigma=tf.constant(0.2))
outputs = dict(samples, **denoised)
project = sorted(name for name in sys.modules
                 if name.split(".")[0] in ("pipeline", "trainer_module", "components", "serving"))
print(json.dumps({"outputs": {key: [value.shape.as_list(), value.dtype.name]
                              for key, value in outputs.items()},
                  "project_modules": project}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  export_dir = str(tmp_path_factory.mktemp("export") / "sampler")
  module = export.export_sampler(tiny_models.seeded_tiny_unet(seed=0), tiny_models.TINY_DIFFUSION,
                                 _SAMPLER, export_dir, unet_config=tiny_models.TINY_UNET)
  loaded = tf.saved_model.load(export_dir)
  return types.SimpleNamespace(dir=export_dir, module=module, loaded=loaded,
                               serve=loaded.signatures[serving_contract.SERVING_SIGNATURE],
                               denoise=loaded.signatures[serving_contract.DENOISE_SIGNATURE])


def _serve(exported, labels, guidance_scale=1.5, num_steps=3, seed=0):
  outputs = exported.serve(labels=tf.constant(labels, tf.int32),
                           guidance_scale=tf.constant(guidance_scale, tf.float32),
                           num_steps=tf.constant(num_steps, tf.int32),
                           seed=tf.constant(seed, tf.int32))
  return {key: value.numpy() for key, value in outputs.items()}


def _saved_model_cli():
  path = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  assert os.path.exists(path), path
  return path


def _env_without_project():
  env = {key: value for key, value in os.environ.items()
         if key not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  return env


def test_export_writes_both_signatures(exported):
  assert set(exported.loaded.signatures) == {"serving_default", "denoise"}
  assert set(exported.serve.structured_outputs) == {"images", "images_float"}
  assert set(exported.denoise.structured_outputs) == {"denoised_images"}


def test_served_samples_match_eager_generate(exported):
  served = _serve(exported, [1, 10, 4], guidance_scale=2.0, num_steps=3, seed=5)
  eager = exported.module.generate(tf.constant([1, 10, 4]), tf.constant(2.0), tf.constant(3),
                                   tf.constant(5))
  np.testing.assert_allclose(served["images_float"], eager["images_float"].numpy(), atol=1e-5)
  # A float within 1e-5 of a rounding boundary may round the other way: allow one grey level.
  assert np.max(np.abs(served["images"].astype(int) - eager["images"].numpy().astype(int))) <= 1


def test_served_images_dtypes_shapes_ranges_and_consistency(exported):
  outputs = _serve(exported, [0, 9, 10])
  images, images_float = outputs["images"], outputs["images_float"]
  assert images.dtype == np.uint8 and images.shape == (3, 28, 28, 1)
  assert images_float.dtype == np.float32 and images_float.shape == (3, 28, 28, 1)
  assert images_float.min() >= 0.0 and images_float.max() <= 1.0
  np.testing.assert_array_equal(images, np.round(images_float * 255.0).astype(np.uint8))
  assert images.std() > 0  # the seeded model draws non-constant images


def test_same_seed_is_identical_and_other_seed_differs(exported):
  first = _serve(exported, [3, 7], seed=11)["images_float"]
  np.testing.assert_array_equal(first, _serve(exported, [3, 7], seed=11)["images_float"])
  assert not np.allclose(first, _serve(exported, [3, 7], seed=12)["images_float"])


def test_sample_does_not_depend_on_the_rest_of_the_request(exported):
  alone = _serve(exported, [6], seed=2)["images_float"]
  batched = _serve(exported, [6, 1, 10, 0], seed=2)["images_float"]
  np.testing.assert_allclose(batched[:1], alone, atol=1e-4)


def test_other_num_steps_work_without_re_export(exported):
  three = _serve(exported, [2, 8], num_steps=3)["images_float"]
  for num_steps in (1, 5, _SAMPLER.max_steps):
    other = _serve(exported, [2, 8], num_steps=num_steps)["images_float"]
    assert other.shape == (2, 28, 28, 1)
    assert not np.allclose(other, three)


def test_limits_are_accepted_at_the_boundary(exported):
  outputs = _serve(exported, [10] * _SAMPLER.max_batch, guidance_scale=0.0, num_steps=1)
  assert outputs["images"].shape == (_SAMPLER.max_batch, 28, 28, 1)


def test_defaults_and_limits_are_saved_as_variables(exported):
  assert int(exported.loaded.default_num_steps.numpy()) == _SAMPLER.num_steps
  assert float(exported.loaded.default_guidance_scale.numpy()) == pytest.approx(
      _SAMPLER.guidance_scale)
  assert int(exported.loaded.max_steps.numpy()) == _SAMPLER.max_steps
  assert int(exported.loaded.max_batch.numpy()) == _SAMPLER.max_batch


def test_load_unet_rebuilds_the_network_the_saved_model_records(exported):
  assert export.recorded_unet_config(exported.loaded) == tiny_models.TINY_UNET
  for source in (exported.dir, exported.loaded):  # a path, or the loaded object
    restored, unet_config = export.load_unet(source)
    assert unet_config == tiny_models.TINY_UNET
    inputs = [tf.random.stateless_normal([2, 28, 28, 1], seed=[3, 0]), tf.constant([0.3, 0.8]),
              tf.constant([4, 10])]
    np.testing.assert_allclose(restored(inputs).numpy(),
                               tiny_models.seeded_tiny_unet(seed=0)(inputs).numpy(), atol=1e-6)


def test_a_saved_model_that_records_no_network_is_refused():
  with pytest.raises(ValueError, match="records no unet_config"):
    export.recorded_unet_config(types.SimpleNamespace(), "some/dir")


def test_denoise_signature_shape_range_and_eager_match(exported):
  noisy = tf.random.stateless_uniform([5, 28, 28, 1], seed=[1, 0])
  for sigma in (0.0, 0.4):
    denoised = exported.denoise(noisy_images=noisy,
                                noise_sigma=tf.constant(sigma))["denoised_images"].numpy()
    assert denoised.shape == (5, 28, 28, 1) and denoised.dtype == np.float32
    assert denoised.min() >= 0.0 and denoised.max() <= 1.0
    eager = exported.module.denoise_unit_range(noisy, tf.constant(sigma))["denoised_images"]
    np.testing.assert_allclose(denoised, eager.numpy(), atol=1e-5)


@pytest.mark.parametrize("request_kwargs", [
    dict(labels=[1, 11]),
    dict(labels=[-1, 2]),
    dict(labels=[1], num_steps=0),
    dict(labels=[1], num_steps=_SAMPLER.max_steps + 1),
    dict(labels=[1], guidance_scale=math.nan),
    dict(labels=[1], guidance_scale=math.inf),
    dict(labels=[1], guidance_scale=-0.5),
    dict(labels=[]),
    dict(labels=[1] * (_SAMPLER.max_batch + 1)),
], ids=["label_11", "label_minus_1", "num_steps_0", "num_steps_above_max", "guidance_nan",
        "guidance_inf", "guidance_negative", "empty_labels", "batch_above_max"])
def test_bad_request_raises_invalid_argument(exported, request_kwargs):
  with pytest.raises(tf.errors.InvalidArgumentError):
    _serve(exported, **request_kwargs)


@pytest.mark.parametrize("noisy_value,sigma", [(0.5, -0.1), (math.nan, 0.2)],
                         ids=["negative_sigma", "nan_images"])
def test_bad_denoise_request_raises_invalid_argument(exported, noisy_value, sigma):
  with pytest.raises(tf.errors.InvalidArgumentError):
    exported.denoise(noisy_images=tf.fill([1, 28, 28, 1], noisy_value),
                     noise_sigma=tf.constant(sigma))


@pytest.fixture(scope="module")
def subprocesses(exported, tmp_path_factory):
  """Runs the fresh-process script, `saved_model_cli show` and `saved_model_cli run`.

  One after the other: each imports TensorFlow, and on 2 cores running them at once is slower.
  """
  workdir = tmp_path_factory.mktemp("subprocesses")
  cli = _saved_model_cli()
  commands = {
      "fresh": [sys.executable, "-c", _FRESH_PROCESS_SCRIPT, exported.dir],
      "show": [cli, "show", "--dir", exported.dir, "--all"],
      "run": [cli, "run", "--dir", exported.dir, "--tag_set", "serve",
              "--signature_def", "serving_default",
              "--input_exprs", "labels=[1,2];guidance_scale=1.5;num_steps=3;seed=0",
              "--outdir", str(workdir / "cli_out")],
  }
  results = {name: subprocess.run(command, cwd=workdir, env=_env_without_project(),
                                  capture_output=True, text=True, timeout=300, check=False)
             for name, command in commands.items()}
  return types.SimpleNamespace(outdir=workdir / "cli_out", **results)


def test_saved_model_loads_and_serves_in_fresh_process_without_project(subprocesses):
  result = subprocesses.fresh
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["outputs"] == {
      "images": [[2, 28, 28, 1], "uint8"],
      "images_float": [[2, 28, 28, 1], "float32"],
      "denoised_images": [[3, 28, 28, 1], "float32"],
  }
  assert report["project_modules"] == []


def test_saved_model_cli_show_lists_both_signatures(subprocesses):
  show = subprocesses.show
  assert show.returncode == 0, show.stderr[-3000:]
  assert "signature_def['serving_default']" in show.stdout
  assert "signature_def['denoise']" in show.stdout


def test_saved_model_cli_run_writes_uint8_images(exported, subprocesses):
  run = subprocesses.run
  assert run.returncode == 0, run.stderr[-3000:]
  images = np.load(subprocesses.outdir / "images.npy")
  assert images.shape == (2, 28, 28, 1)
  assert images.dtype == np.uint8
  # The session-based run executes the same graph as the TF2 signature.
  np.testing.assert_array_equal(images, _serve(exported, [1, 2], 1.5, 3, 0)["images"])


def test_saved_model_graph_has_no_python_function_ops(exported):
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(exported.dir, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  ops = set()
  for meta_graph in saved_model.meta_graphs:
    ops.update(node.op for node in meta_graph.graph_def.node)
    for function in meta_graph.graph_def.library.function:
      ops.update(node.op for node in function.node_def)
  # The inspection reaches the function bodies: the sampler loop and the request checks are there.
  assert ops & {"While", "StatelessWhile"}
  assert "Assert" in ops
  assert not ops & _PY_FUNC_OPS


def test_a_bfloat16_export_serves_in_fresh_process_without_project(tmp_path):
  export_dir = str(tmp_path / "sampler")
  export.export_sampler(tiny_models.seeded_tiny_unet(seed=0), tiny_models.TINY_DIFFUSION,
                        dataclasses.replace(_SAMPLER, compute_dtype="bfloat16"), export_dir,
                        unet_config=tiny_models.TINY_UNET)
  result = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_SCRIPT, export_dir],
                          env=_env_without_project(), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["outputs"]["images"] == [[2, 28, 28, 1], "uint8"]
  assert report["outputs"]["denoised_images"] == [[3, 28, 28, 1], "float32"]
  assert report["project_modules"] == []
