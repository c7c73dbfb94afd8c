"""The SavedModel that Pusher pushes and TF Serving serves: the whole guided sampler in one graph.

Signatures:
  serving_default(labels int32 [N], guidance_scale float32 [], num_steps int32 [], seed int32 [])
      -> images uint8 [N, 28, 28, 1] (pixel space, the Transform's scaling inverted),
         images_float float32 [N, 28, 28, 1] in [0, 1]
  denoise(noisy_images float32 [N, 28, 28, 1] in [0, 1], noise_sigma float32 [])
      -> denoised_images float32 [N, 28, 28, 1] in [0, 1]: one-step x0 estimate, unconditional.
      Pixels exactly at 0 or 1 are taken as clipped and un-clipped first (clipped_noise.py).
Labels are 0..9, or NULL_LABEL (10) for an unconditional sample. Bad requests fail inside the
graph with InvalidArgument. Only TensorFlow ops: the model loads where this project is not installed.
"""

import dataclasses
import json
import math
from typing import Optional

import numpy as np
import tensorflow as tf

from pipeline.config import (IMAGE_SIZE, NUM_CLASSES, DiffusionConfig, SamplerConfig, UNetConfig)
from trainer_module import clipped_noise
from trainer_module import samplers
from trainer_module import schedule as schedule_lib
from trainer_module import transform
from trainer_module import unet
from serving import warmup

SERVING_SIGNATURE = "serving_default"
DENOISE_SIGNATURE = "denoise"
IMAGE_SPEC = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32)


def schedule_from_config(config: DiffusionConfig) -> schedule_lib.CosineSchedule:
  return schedule_lib.CosineSchedule(config.min_signal_rate, config.max_signal_rate)


# autograph=False throughout: the sampler uses explicit tf.while_loop, and converting every Keras
# layer call with autograph made tracing (and so export) take about a minute.
class GuidedSamplerModule(tf.Module):
  """Wraps the (EMA) denoising network with the sampler and the pixel-space conversions."""

  def __init__(self, model, diffusion: DiffusionConfig, sampler: SamplerConfig,
               unet_config: Optional[UNetConfig] = None):
    super().__init__(name="guided_sampler")
    # Track the weights, not the Keras object: saving a Keras model traces every layer's call for
    # Keras metadata, which the served graph does not need and which makes export minutes slower.
    self.model_variables = list(model.variables)
    self._model = lambda inputs, training=False: model(inputs, training=training)
    self._model = samplers.concurrent_network(self._model, sampler.network_copies)
    if sampler.max_rows_per_call:
      self._model = samplers.chunked_network(self._model, sampler.max_rows_per_call)
    self._schedule = schedule_from_config(diffusion)
    self._prediction = diffusion.prediction
    self._sampler = sampler
    # Saved as variables so a client can read the defaults and limits from the SavedModel.
    self.default_num_steps = tf.Variable(sampler.num_steps, trainable=False, dtype=tf.int32)
    self.default_guidance_scale = tf.Variable(sampler.guidance_scale, trainable=False)
    self.max_steps = tf.Variable(sampler.max_steps, trainable=False, dtype=tf.int32)
    self.max_batch = tf.Variable(sampler.max_batch, trainable=False, dtype=tf.int32)
    self.sampler_name = tf.Variable(sampler.sampler, trainable=False, dtype=tf.string)
    # The network's UNetConfig as JSON ("" if not given), so restore_unet can rebuild it.
    self.unet_config = tf.Variable(unet_config.to_json() if unet_config else "", trainable=False,
                                   dtype=tf.string)
    self.compute_dtype = tf.Variable(sampler.compute_dtype, trainable=False, dtype=tf.string)
    # How the graph calls the network (0 rows: no limit), so a re-export keeps it unless told.
    self.max_rows_per_call = tf.Variable(sampler.max_rows_per_call or 0, trainable=False,
                                         dtype=tf.int32)
    self.network_copies = tf.Variable(sampler.network_copies, trainable=False, dtype=tf.int32)
    # [min, max] noise levels where guidance above 1 applies (max = inf: no upper bound).
    self.guidance_sigma_interval = tf.Variable(
        [sampler.guidance_min_sigma,
         float("inf") if sampler.guidance_max_sigma is None else sampler.guidance_max_sigma],
        trainable=False, dtype=tf.float32)

  def _validate_request(self, labels, guidance_scale, num_steps):
    batch_size = tf.size(labels)
    return [
        tf.debugging.assert_positive(batch_size, message="labels must not be empty"),
        tf.debugging.assert_less_equal(
            batch_size, self.max_batch, message=f"at most {self._sampler.max_batch} labels per request"),
        tf.debugging.assert_greater_equal(labels, 0, message="labels must be in 0..10"),
        tf.debugging.assert_less_equal(
            labels, self._sampler.null_label,
            message=f"labels must be 0..{NUM_CLASSES - 1}, or {self._sampler.null_label} for unconditional"),
        tf.debugging.assert_greater_equal(num_steps, 1, message="num_steps must be >= 1"),
        tf.debugging.assert_less_equal(
            num_steps, self.max_steps, message=f"num_steps must be <= {self._sampler.max_steps}"),
        tf.debugging.assert_all_finite(guidance_scale, message="guidance_scale must be finite"),
        tf.debugging.assert_non_negative(guidance_scale, message="guidance_scale must be >= 0"),
    ]

  def generate(self, labels, guidance_scale, num_steps, seed):
    """Samples images for `labels`; the Python-callable form of `serving_default`."""
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    with tf.control_dependencies(self._validate_request(labels, guidance_scale, num_steps)):
      noise = samplers.initial_noise(seed, tf.size(labels))
    pred_images = samplers.sample(
        self._model, noise, labels, num_steps, guidance_scale, self._schedule, self._prediction,
        self._sampler.null_label, sampler=self._sampler.sampler, seed=seed,
        guidance_min_sigma=self._sampler.guidance_min_sigma,
        guidance_max_sigma=self._sampler.guidance_max_sigma)
    return {"images": transform.to_pixels(pred_images),
            "images_float": transform.to_unit_range(pred_images)}

  def denoise_unit_range(self, noisy_images, noise_sigma):
    """One-step denoising of images carrying Gaussian noise of std `noise_sigma`, clipped or not."""
    with tf.control_dependencies([
        tf.debugging.assert_non_negative(noise_sigma, message="noise_sigma must be >= 0"),
        tf.debugging.assert_all_finite(noisy_images, message="noisy_images must be finite")]):
      noisy = clipped_noise.unclip(noisy_images, noise_sigma)
    null_labels = tf.fill([tf.shape(noisy)[0]], self._sampler.null_label)
    return {"denoised_images": samplers.denoise_unit_range(
        self._model, noisy, noise_sigma, null_labels, self._schedule, self._prediction)}

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None], tf.int32, name="labels"),
      tf.TensorSpec([], tf.float32, name="guidance_scale"),
      tf.TensorSpec([], tf.int32, name="num_steps"),
      tf.TensorSpec([], tf.int32, name="seed"),
  ])
  def serving_default(self, labels, guidance_scale, num_steps, seed):
    return self.generate(labels, guidance_scale, num_steps, seed)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32, name="noisy_images"),
      tf.TensorSpec([], tf.float32, name="noise_sigma"),
  ])
  def denoise(self, noisy_images, noise_sigma):
    return self.denoise_unit_range(noisy_images, noise_sigma)


def export_sampler(model, diffusion: DiffusionConfig, sampler: SamplerConfig, export_dir: str,
                   unet_config: Optional[UNetConfig] = None):
  """Writes the serving SavedModel (with TF Serving warm-up requests) and returns the module.
  `unet_config`, the network's own, is recorded in the SavedModel for restore_unet. With
  `sampler.compute_dtype` other than float32 the served network is `model`'s weights in a copy
  built for that dtype (which needs `unet_config`)."""
  model = network_for_serving(model, sampler.compute_dtype, unet_config)
  module = GuidedSamplerModule(model, diffusion, sampler, unet_config)
  # The tf.functions, not concrete functions traced here: save() traces in its own context, so a
  # function traced before it is traced again (twice the export time, two copies in the graph).
  tf.saved_model.save(module, export_dir, signatures={
      SERVING_SIGNATURE: module.serving_default, DENOISE_SIGNATURE: module.denoise})
  # TF Serving replays these at load time, so the first user request does not pay for warm-up.
  warmup.write_warmup_requests(export_dir, warmup.default_warmup_requests(
      guidance_scale=sampler.guidance_scale, num_steps=min(2, sampler.max_steps)))
  return module


def network_for_serving(model, compute_dtype: str, unet_config: Optional[UNetConfig]):
  """`model` itself for float32; else a copy computing in `compute_dtype` with its weights."""
  if compute_dtype == "float32":
    return model
  if unet_config is None:
    raise ValueError(f"a {compute_dtype} export rebuilds the network: give its unet_config")
  network = unet.build_unet(unet_config, name=model.name, compute_dtype=compute_dtype)
  network.set_weights(model.get_weights())
  return network


def exported_unet_config(loaded, fallback: UNetConfig) -> UNetConfig:
  """The UNetConfig a loaded sampler SavedModel records; `fallback` for exports that record none.

  Exports from before the record (pipeline runs 1-8) all upsample with nearest + conv, which their
  weights show (an `upsample1` conv kernel); for those the fallback gets that upsampling. Exports
  from before `decoder_skips` existed (runs 1-10) all have skips from every encoder layer: a
  record without the field means that, and without a record the weights show it (a decoder
  block beyond res_blocks_per_level at 28x28).
  """
  recorded = getattr(loaded, "unet_config", None)
  if recorded is not None and recorded.numpy():
    fields = json.loads(recorded.numpy().decode())
    fields.setdefault("decoder_skips", "every_layer")
    return UNetConfig.from_dict(fields)
  names = [v.name for v in loaded.model_variables]
  if any(name.startswith("upsample1/") for name in names):
    fallback = dataclasses.replace(fallback, upsample="nearest_conv")
  if any(name.startswith(f"up0_{fallback.res_blocks_per_level}_") for name in names):
    fallback = dataclasses.replace(fallback, decoder_skips="every_layer")
  return fallback


def exported_sampler_config(loaded, fallback: SamplerConfig) -> SamplerConfig:
  """The SamplerConfig a loaded sampler SavedModel was exported with: `fallback` with each setting
  the SavedModel records (sampler, default steps and guidance, the request limits, the guidance
  interval, the compute dtype, the rows per network call and the network copies) replaced by the
  recorded value. `null_label` is not recorded and stays the fallback's, as do the rows per call
  and copies of exports from before session 28, which did not record them; an export from before
  the interval was recorded guides every step, which is what its graph does."""
  def recorded(name):
    variable = getattr(loaded, name, None)
    return variable.numpy() if isinstance(variable, tf.Variable) else None

  def decimal(value) -> float:
    # The shortest decimal of the recorded float32: 1.6, not 1.600000023841858.
    return float(str(np.float32(value)))

  fields = {}
  for field, name, convert in (("sampler", "sampler_name", lambda v: v.decode()),
                               ("compute_dtype", "compute_dtype", lambda v: v.decode()),
                               ("num_steps", "default_num_steps", int),
                               ("guidance_scale", "default_guidance_scale", decimal),
                               ("max_steps", "max_steps", int),
                               ("max_batch", "max_batch", int),
                               ("max_rows_per_call", "max_rows_per_call", lambda v: int(v) or None),
                               ("network_copies", "network_copies", int)):
    value = recorded(name)
    if value is not None:
      fields[field] = convert(value)
  interval = recorded("guidance_sigma_interval")
  low, high = (0.0, float("inf")) if interval is None else (decimal(interval[0]),
                                                              decimal(interval[1]))
  fields.update(guidance_min_sigma=low, guidance_max_sigma=None if math.isinf(high) else high)
  return dataclasses.replace(fallback, **fields)


def reexport_sampler(saved_model_dir: str, export_dir: str, diffusion: DiffusionConfig,
                     sampler: SamplerConfig, unet_fallback: UNetConfig, loaded=None):
  """The weights of the sampler SavedModel at `saved_model_dir`, exported again to `export_dir`
  with `sampler`'s settings (warm-up requests included): another sampler, default step count or
  guidance without retraining. The network is rebuilt from the UNetConfig the SavedModel records
  (`unet_fallback` for exports that record none); `diffusion` (schedule, prediction) must be the
  one it was trained with. `loaded`: that SavedModel, if the caller has already loaded it."""
  if loaded is None:
    loaded = tf.saved_model.load(saved_model_dir)
  network, unet_config = unet_from_loaded(loaded, unet_fallback, saved_model_dir)
  return export_sampler(network, diffusion, sampler, export_dir, unet_config=unet_config)


def restore_unet(saved_model_dir: str, unet_config: UNetConfig):
  """A U-Net holding the exported weights (see load_unet)."""
  return load_unet(saved_model_dir, unet_config)[0]


def load_unet(saved_model_dir: str, unet_config: UNetConfig):
  """(U-Net holding the exported weights, its UNetConfig): built from the config the SavedModel
  records (else `unet_config`), weights matched by variable name (the order of `model.variables`
  follows the layer graph, which a change to the network can reorder)."""
  return unet_from_loaded(tf.saved_model.load(saved_model_dir), unet_config, saved_model_dir)


def unet_from_loaded(loaded, unet_config: UNetConfig, source: str = "the SavedModel"):
  """load_unet for a SavedModel already loaded (`source` names it in errors)."""
  unet_config = exported_unet_config(loaded, unet_config)
  model = unet.build_unet(unet_config)
  exported = {v.name: v for v in loaded.model_variables}
  shapes = {v.name: tuple(v.shape) for v in model.variables}
  exported_shapes = {name: tuple(v.shape) for name, v in exported.items()}
  if shapes != exported_shapes:
    raise ValueError(f"{source} does not hold weights of this U-Net ({len(exported)} vs "
                     f"{len(shapes)} variables): is --profile the one it was trained with?")
  for variable in model.variables:
    variable.assign(exported[variable.name])
  return model, unet_config
