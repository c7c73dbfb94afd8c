"""serving.reexport: a pushed model served with other sampler settings as the next version."""

import argparse
import dataclasses
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from core import config as config_lib
from core import serving_contract
from serving import reexport
from core import warmup
from trainer_module import export

SMOKE = config_lib.profile("smoke")


@pytest.fixture(scope="module")
def reexported(smoke_export_dir, tmp_path_factory):
  """A serving dir holding the smoke export as version 1, then the command's version 2."""
  serving_dir = str(tmp_path_factory.mktemp("reexport") / "serving_model")
  shutil.copytree(smoke_export_dir, os.path.join(serving_dir, "1"))
  reexport.main(["--serving-dir", serving_dir, "--profile", "smoke", "--sampler", "dpmpp_2m",
                 "--num-steps", "3", "--guidance", "2.5"])
  return serving_dir


def test_recorded_sampler_config_reads_what_the_export_records(smoke_export_dir):
  recorded = serving_contract.recorded_sampler_config(tf.saved_model.load(smoke_export_dir))
  assert recorded == SMOKE.sampler


def test_a_saved_model_that_records_no_sampler_settings_is_refused():
  class NotOurExport:
    pass
  with pytest.raises(ValueError, match="records no sampler_name"):
    serving_contract.recorded_sampler_config(NotOurExport(), "some/dir")


@pytest.mark.slow
def test_reexport_writes_the_next_version_with_only_the_requested_changes(reexported):
  assert serving_contract.numeric_versions(reexported) == [1, 2]
  assert serving_contract.resolve_model_dir(reexported) == os.path.join(reexported, "2")  # what TF Serving serves
  old = tf.saved_model.load(os.path.join(reexported, "1"))
  new = tf.saved_model.load(os.path.join(reexported, "2"))
  assert serving_contract.recorded_sampler_config(new) == dataclasses.replace(
      serving_contract.recorded_sampler_config(old), sampler="dpmpp_2m", num_steps=3,
      guidance_scale=2.5)
  assert export.recorded_unet_config(new) == export.recorded_unet_config(old) == SMOKE.unet
  old_weights = {v.name: v.numpy() for v in old.model_variables}
  new_weights = {v.name: v.numpy() for v in new.model_variables}
  assert old_weights.keys() == new_weights.keys()
  for name, value in old_weights.items():
    np.testing.assert_array_equal(new_weights[name], value)
  # Its own warm-up requests, at its own default guidance.
  (request,) = warmup.read_warmup_requests(os.path.join(reexported, "2"))
  assert tf.make_ndarray(request.inputs["guidance_scale"]) == pytest.approx(2.5)


@pytest.mark.slow
def test_a_reexport_keeps_the_recorded_network_calls(smoke_export_dir, tmp_path):
  serving_dir = str(tmp_path / "serving_model")
  shutil.copytree(smoke_export_dir, os.path.join(serving_dir, "1"))
  reexport.main(["--serving-dir", serving_dir, "--profile", "smoke", "--max-rows-per-call", "none",
                 "--network-copies", "3"])
  reexport.main(["--serving-dir", serving_dir, "--profile", "smoke", "--num-steps", "2"])
  # Version 3 changed only the default step count: no row limit and three copies, as version 2.
  recorded = serving_contract.recorded_sampler_config(
      tf.saved_model.load(os.path.join(serving_dir, "3")))
  assert recorded == dataclasses.replace(SMOKE.sampler, max_rows_per_call=None, network_copies=3,
                                         num_steps=2)


@pytest.mark.slow
def test_the_new_version_samples_with_the_new_sampler(reexported):
  def images(version):
    signature = tf.saved_model.load(os.path.join(reexported, version)).signatures["serving_default"]
    return signature(labels=tf.constant([0, 7]), guidance_scale=tf.constant(1.5),
                     num_steps=tf.constant(3), seed=tf.constant(4))["images_float"].numpy()
  ddim, dpmpp = images("1"), images("2")
  assert dpmpp.shape == (2, 28, 28, 1) and np.isfinite(dpmpp).all()
  # Three steps: DPM-Solver++(2M)'s middle one is second order, so the images are not DDIM's.
  assert np.abs(dpmpp - ddim).max() > 1e-3


@pytest.mark.slow
def test_a_bfloat16_version_keeps_the_weights_and_samples_close_to_float32(smoke_export_dir,
                                                                           tmp_path):
  serving_dir = str(tmp_path / "serving_model")
  shutil.copytree(smoke_export_dir, os.path.join(serving_dir, "1"))
  reexport.main(["--serving-dir", serving_dir, "--profile", "smoke", "--compute-dtype", "bfloat16"])
  new = tf.saved_model.load(os.path.join(serving_dir, "2"))
  old = tf.saved_model.load(os.path.join(serving_dir, "1"))
  assert serving_contract.recorded_sampler_config(new) == dataclasses.replace(
      serving_contract.recorded_sampler_config(old), compute_dtype="bfloat16")
  new_weights = {v.name: v for v in new.model_variables}
  for variable in old.model_variables:
    assert new_weights[variable.name].dtype == tf.float32
    np.testing.assert_array_equal(new_weights[variable.name].numpy(), variable.numpy())
  request = dict(labels=tf.constant([0, 7]), guidance_scale=tf.constant(1.5),
                 num_steps=tf.constant(3), seed=tf.constant(4))
  bf16 = new.signatures["serving_default"](**request)
  fp32 = old.signatures["serving_default"](**request)
  assert bf16["images"].dtype == tf.uint8 and bf16["images_float"].dtype == tf.float32
  difference = np.abs(bf16["images_float"].numpy() - fp32["images_float"].numpy())
  assert 0.0 < difference.max() < 0.1 and difference.mean() < 0.01


@pytest.mark.parametrize("flags, message", [
    ([], "nothing to change"),
    (["--num-steps", "0"], "num_steps"),
    (["--guidance", "-1"], "guidance"),
    (["--guidance-interval", "5", "1"], "interval"),
    (["--max-rows-per-call", "0"], "positive"),
    (["--network-copies", "0"], "positive"),
    (["--compute-dtype", "float16"], "invalid choice"),
    (["--sampler", "dpmpp_2m", "--version", "1"], "already exists"),
])
def test_bad_requests_write_nothing(smoke_serving_dir, flags, message, capsys):
  before = serving_contract.numeric_versions(smoke_serving_dir)
  with pytest.raises(SystemExit):
    reexport.main(["--serving-dir", smoke_serving_dir, "--profile", "smoke", *flags])
  assert message in capsys.readouterr().err
  assert serving_contract.numeric_versions(smoke_serving_dir) == before


def test_network_copies_is_a_change_the_command_line_can_ask_for():
  fields = ("sampler", "num_steps", "guidance", "guidance_interval", "max_rows_per_call",
            "compute_dtype")
  args = argparse.Namespace(**dict.fromkeys(fields), network_copies=1)
  assert reexport.requested_changes(args) == {"network_copies": 1}
