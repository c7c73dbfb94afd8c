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

import tensorflow as tf

from core import serving_contract
from core import warmup
from core.config import IMAGE_SIZE, NULL_LABEL, NUM_CLASSES, DiffusionConfig, SamplerConfig
from core.config import UNetConfig
from trainer_module import clipped_noise
from trainer_module import samplers
from trainer_module import schedule as schedule_lib
from trainer_module import transform
from trainer_module import unet


def schedule_from_config(config: DiffusionConfig) -> schedule_lib.CosineSchedule:
  return schedule_lib.CosineSchedule(config.min_signal_rate, config.max_signal_rate)


# autograph=False throughout: the sampler uses explicit tf.while_loop, and converting every Keras
# layer call with autograph made tracing (and so export) take about a minute.
class GuidedSamplerModule(tf.Module):
  """Wraps the (EMA) denoising network with the sampler and the pixel-space conversions."""

  def __init__(self, model, diffusion: DiffusionConfig, sampler: SamplerConfig,
               unet_config: UNetConfig):
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
    # The settings a client, the Evaluator and a re-export read back (serving_contract).
    for name, variable in serving_contract.sampler_variables(sampler).items():
      setattr(self, name, variable)
    # The network's own UNetConfig, so load_unet can rebuild it.
    self.unet_config = tf.Variable(unet_config.to_json(), trainable=False, dtype=tf.string)

  def _validate_request(self, labels, guidance_scale, num_steps):
    batch_size = tf.size(labels)
    return [
        tf.debugging.assert_positive(batch_size, message="labels must not be empty"),
        tf.debugging.assert_less_equal(
            batch_size, self.max_batch, message=f"at most {self._sampler.max_batch} labels per request"),
        tf.debugging.assert_greater_equal(labels, 0, message="labels must be in 0..10"),
        tf.debugging.assert_less_equal(
            labels, NULL_LABEL,
            message=f"labels must be 0..{NUM_CLASSES - 1}, or {NULL_LABEL} for unconditional"),
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
        NULL_LABEL, sampler=self._sampler.sampler, seed=seed,
        guidance_min_sigma=self._sampler.guidance_min_sigma,
        guidance_max_sigma=self._sampler.guidance_max_sigma)
    return {serving_contract.IMAGES_OUTPUT: transform.to_pixels(pred_images),
            serving_contract.IMAGES_FLOAT_OUTPUT: transform.to_unit_range(pred_images)}

  def denoise_unit_range(self, noisy_images, noise_sigma):
    """One-step denoising of images carrying Gaussian noise of std `noise_sigma`, clipped or not."""
    with tf.control_dependencies([
        tf.debugging.assert_non_negative(noise_sigma, message="noise_sigma must be >= 0"),
        tf.debugging.assert_all_finite(noisy_images, message="noisy_images must be finite")]):
      noisy = clipped_noise.unclip(noisy_images, noise_sigma)
    null_labels = tf.fill([tf.shape(noisy)[0]], NULL_LABEL)
    return {serving_contract.DENOISED_IMAGES_OUTPUT: samplers.denoise_unit_range(
        self._model, noisy, noise_sigma, null_labels, self._schedule, self._prediction)}

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None], tf.int32, name=serving_contract.LABELS),
      tf.TensorSpec([], tf.float32, name=serving_contract.GUIDANCE_SCALE),
      tf.TensorSpec([], tf.int32, name=serving_contract.NUM_STEPS),
      tf.TensorSpec([], tf.int32, name=serving_contract.SEED),
  ])
  def serving_default(self, labels, guidance_scale, num_steps, seed):
    return self.generate(labels, guidance_scale, num_steps, seed)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32, name=serving_contract.NOISY_IMAGES),
      tf.TensorSpec([], tf.float32, name=serving_contract.NOISE_SIGMA),
  ])
  def denoise(self, noisy_images, noise_sigma):
    return self.denoise_unit_range(noisy_images, noise_sigma)


def export_sampler(model, diffusion: DiffusionConfig, sampler: SamplerConfig, export_dir: str,
                   unet_config: UNetConfig):
  """Writes the serving SavedModel (with TF Serving warm-up requests) and returns the module.
  `unet_config`, the network's own, is recorded in the SavedModel for load_unet. With
  `sampler.compute_dtype` other than float32 the served network is `model`'s weights in a copy
  built for that dtype."""
  model = network_for_serving(model, sampler.compute_dtype, unet_config)
  module = GuidedSamplerModule(model, diffusion, sampler, unet_config)
  # The tf.functions, not concrete functions traced here: save() traces in its own context, so a
  # function traced before it is traced again (twice the export time, two copies in the graph).
  tf.saved_model.save(module, export_dir, signatures={
      serving_contract.SERVING_SIGNATURE: module.serving_default,
      serving_contract.DENOISE_SIGNATURE: module.denoise})
  # TF Serving replays these at load time, so the first user request does not pay for warm-up.
  warmup.write_warmup_requests(export_dir, warmup.default_warmup_requests(
      guidance_scale=sampler.guidance_scale, num_steps=min(2, sampler.max_steps)))
  return module


def network_for_serving(model, compute_dtype: str, unet_config: UNetConfig):
  """`model` itself for float32; else a copy computing in `compute_dtype` with its weights."""
  if compute_dtype == "float32":
    return model
  network = unet.build_unet(unet_config, name=model.name, compute_dtype=compute_dtype)
  network.set_weights(model.get_weights())
  return network


def recorded_unet_config(loaded, source: str = "the SavedModel") -> UNetConfig:
  """The UNetConfig of the network in a loaded sampler SavedModel (export_sampler records it)."""
  recorded = getattr(loaded, "unet_config", None)
  if not isinstance(recorded, tf.Variable) or not recorded.numpy():
    raise ValueError(
        f"{source} is not a sampler exported by this project: it records no unet_config")
  return UNetConfig.from_json(recorded.numpy().decode())


def reexport_sampler(saved_model, export_dir: str, diffusion: DiffusionConfig,
                     sampler: SamplerConfig):
  """The weights of a sampler SavedModel (a path, or the object tf.saved_model.load returned),
  exported again to `export_dir` with `sampler`'s settings (warm-up requests included): another
  sampler, default step count or guidance without retraining. `diffusion` (schedule, prediction)
  must be the one the network was trained with."""
  network, unet_config = load_unet(saved_model)
  return export_sampler(network, diffusion, sampler, export_dir, unet_config)


def load_unet(saved_model):
  """(U-Net holding the exported weights, its UNetConfig) from a sampler SavedModel: a path, or
  the object tf.saved_model.load returned. The network is rebuilt from the UNetConfig the
  SavedModel records; weights are matched by variable name (the order of `model.variables`
  follows the layer graph, which a change to the network can reorder)."""
  source = saved_model if isinstance(saved_model, str) else "the SavedModel"
  loaded = tf.saved_model.load(saved_model) if isinstance(saved_model, str) else saved_model
  unet_config = recorded_unet_config(loaded, source)
  model = unet.build_unet(unet_config)
  exported = {v.name: v for v in loaded.model_variables}
  shapes = {v.name: tuple(v.shape) for v in model.variables}
  exported_shapes = {name: tuple(v.shape) for name, v in exported.items()}
  if shapes != exported_shapes:
    raise ValueError(f"{source} does not hold weights of the U-Net it records ({len(exported)} "
                     f"vs {len(shapes)} variables)")
  for variable in model.variables:
    variable.assign(exported[variable.name])
  return model, unet_config
