"""Guided samplers: plain graph-friendly functions of (model, noise, labels, steps, guidance).

Classifier-free guidance uses the diffusers convention: `guidance_scale` 0 = the unconditional
model, 1 = the conditional model alone, > 1 = guided. Conditional and unconditional predictions are
computed on one doubled batch. The step count is a tensor (`tf.while_loop`), so one traced graph
serves every `num_steps`; all randomness is stateless and keyed by (seed, sample index, step), so
a request gives the same images whatever else is in its batch.
"""

from typing import Callable, Optional

import tensorflow as tf

from core.config import IMAGE_SIZE, SAMPLERS
from trainer_module import schedule as schedule_lib
from trainer_module import transform

# Stream ids: 0 for the initial noise, 1 + step for the per-step noise of ancestral sampling.
_INITIAL_NOISE_STREAM = 0
_STEP_NOISE_STREAM = 1


def per_sample_normal(seed: tf.Tensor, batch_size: tf.Tensor, stream: tf.Tensor) -> tf.Tensor:
  """Standard normal images [N, 28, 28, 1]; sample i depends only on (seed, stream, i)."""
  base_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(stream, tf.int64)])

  def one_sample(index):
    sample_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
    return tf.random.stateless_normal([IMAGE_SIZE, IMAGE_SIZE, 1], seed=sample_seed)

  return tf.map_fn(one_sample, tf.range(tf.cast(batch_size, tf.int64)),
                   fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32))


def initial_noise(seed: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
  return per_sample_normal(seed, batch_size, _INITIAL_NOISE_STREAM)


def step_times(step, num_steps):
  """(t, t_next) of step `step` (a scalar or a vector of steps) of the evenly spaced grid every
  sampler walks from t = 1 to t = 0: t = 1 - step / num_steps, t_next = t - 1 / num_steps."""
  step_size = 1.0 / tf.cast(num_steps, tf.float32)
  times = 1.0 - tf.cast(step, tf.float32) * step_size
  return times, times - step_size


def chunk_layout(rows, max_rows: int):
  """(num_chunks, chunk_rows): `rows` rows in the fewest chunks of at most `max_rows` rows, all of
  equal size (the last one padded by at most num_chunks - 1 rows)."""
  if max_rows < 1:
    raise ValueError(f"max_rows must be positive, got {max_rows}")
  rows = tf.convert_to_tensor(rows, tf.int32)
  num_chunks = tf.maximum((rows + max_rows - 1) // max_rows, 1)
  return num_chunks, (rows + num_chunks - 1) // num_chunks


def _pad_rows(values: tf.Tensor, padding) -> tf.Tensor:
  """`values` with `padding` rows of zeros appended along the first axis."""
  return tf.pad(values, [[0, padding]] + [[0, 0]] * (values.shape.rank - 1))


def chunked_network(model: Callable, max_rows: int) -> Callable:
  """`model`, called on the chunks of `chunk_layout(rows, max_rows)`, one at a time.

  Same outputs, bounded activations: a guided request for 256 digits is 512 rows. The chunk size
  trades memory for speed per CPU (docs/design.md#rows-per-network-call). Every row is computed
  independently of the others (GroupNorm is per sample), so chunking changes no result.

  One chunk at a time: two in flight would be faster, but one kernel of TensorFlow 2.16's oneDNN
  convolution is not safe to run twice at once (a first call segfaulted in
  `MklConvOp::AllocateOutputTensor`, caught under gdb in this repo's tests), and a served model
  must not crash its server. `concurrent_network` gets that overlap from separate kernels.
  """
  chunk_layout(1, max_rows)  # reject a bad limit when wrapping, not on the first call

  def call(inputs, training=False):
    images, times, labels = inputs
    rows = tf.shape(images)[0]
    num_chunks, chunk_rows = chunk_layout(rows, max_rows)
    padding = num_chunks * chunk_rows - rows

    def chunks(values):
      return tf.reshape(_pad_rows(values, padding), tf.concat([[num_chunks, chunk_rows], tf.shape(values)[1:]], 0))

    outputs = tf.map_fn(
        lambda chunk: model(list(chunk), training=training),
        (chunks(images), chunks(times), chunks(labels)),
        # The prediction (v or eps) has the images' shape.
        fn_output_signature=tf.TensorSpec([None] + images.shape[1:].as_list(), tf.float32),
        parallel_iterations=1)  # not 2: see the docstring
    return tf.reshape(outputs, tf.concat([[-1], tf.shape(outputs)[2:]], 0))[:rows]

  return call


def concurrent_network(model: Callable, copies: int) -> Callable:
  """`model` on `copies` equal slices of a call's rows, each slice through its own copy of the
  network's ops (the model is traced once per slice), so the graph runtime's inter-op threads run
  the slices at once. The same outputs, sooner: two ops in flight keep both cores busy where one
  op alone does not (small ops, memory-bound ones, a thread waiting at a parallel-for's end).
  docs/design.md#network-copies has the gain per request size.

  Separate copies, not one copy run twice at once: two loop iterations sharing one oneDNN
  convolution kernel crashed (`chunked_network`), because the kernel keeps per-call buffers in
  members without a lock; separate kernels share nothing but oneDNN's primitive cache, which is
  per thread. Rows are padded up to a multiple of `copies` (at most copies - 1 extra rows, sliced
  off again)."""
  if copies < 1:
    raise ValueError(f"copies must be positive, got {copies}")
  if copies == 1:
    return model

  def call(inputs, training=False):
    rows = tf.shape(inputs[0])[0]
    slice_rows = (rows + copies - 1) // copies
    padding = slice_rows * copies - rows
    padded = [_pad_rows(values, padding) for values in inputs]
    outputs = [model([values[index * slice_rows:(index + 1) * slice_rows] for values in padded],
                     training=training)
               for index in range(copies)]
    return tf.concat(outputs, 0)[:rows]

  return call


def runs_one_half(guidance_scale) -> tf.Tensor:
  """At guidance 0 (unconditional) and 1 (conditional alone) one half of the batch is enough."""
  return tf.logical_or(tf.equal(guidance_scale, 0.0), tf.equal(guidance_scale, 1.0))


def guided_prediction(model: Callable, noisy_images, diffusion_times, labels, guidance_scale,
                      null_label: int):
  """uncond + guidance_scale * (cond - uncond), both halves from one doubled batch.

  At guidance 1 (the conditional model alone) and 0 (the unconditional model) only one half
  matters, so only that one is computed: such requests cost half as much.
  """
  guidance_scale = tf.cast(guidance_scale, tf.float32)
  labels = tf.cast(labels, tf.int32)
  null_labels = tf.fill([tf.shape(noisy_images)[0]], tf.constant(null_label, tf.int32))
  one_half = runs_one_half(guidance_scale)
  # The conds pick the rows and combine the outputs; the network itself is called (and traced)
  # once, so exporting costs no more than with a fixed doubled batch.
  rows = tf.cond(one_half, lambda: noisy_images, lambda: tf.concat([noisy_images] * 2, 0))
  times = tf.cond(one_half, lambda: diffusion_times, lambda: tf.concat([diffusion_times] * 2, 0))
  row_labels = tf.cond(
      one_half,
      lambda: tf.where(tf.equal(guidance_scale, 0.0), null_labels, labels),
      lambda: tf.concat([labels, null_labels], 0))
  predictions = model([rows, times, row_labels], training=False)

  def combine():
    conditional, unconditional = tf.split(predictions, 2, axis=0)
    return unconditional + guidance_scale * (conditional - unconditional)

  return tf.cond(one_half, lambda: predictions, combine)


def step_guidance_scale(guidance_scale, signal_rates, noise_rates, min_sigma: float = 0.0,
                        max_sigma: Optional[float] = None):
  """The guidance scale of one step: `guidance_scale` while the step's noise level
  sigma = noise_rate / signal_rate lies in [min_sigma, max_sigma], otherwise at most 1.

  Guidance in a limited interval (Kynkaenniemi et al. 2024): at low noise the class is already
  decided, so guidance there only sharpens strokes past the data and costs a doubled batch for
  nothing; at the highest noise it costs diversity (here, guiding there too more than doubled
  the Frechet distance at the same class agreement). Outside the interval a guided
  request runs the conditional model alone (half the rows). Scales <= 1 (unconditional,
  conditional, or between) are never changed.
  """
  guidance_scale = tf.cast(guidance_scale, tf.float32)
  sigma = noise_rates / signal_rates
  inside = sigma >= min_sigma
  if max_sigma is not None:
    inside = tf.logical_and(inside, sigma <= max_sigma)
  return tf.where(inside, guidance_scale, tf.minimum(guidance_scale, 1.0))


def network_rows_per_sample(num_steps: int, guidance_scale: float,
                            schedule: schedule_lib.CosineSchedule, guidance_min_sigma: float = 0.0,
                            guidance_max_sigma: Optional[float] = None) -> int:
  """How many network rows one sample costs over `num_steps` steps of `sample`: two at a guided
  step (the doubled batch), one where the step's scale is 0 or 1 (guided_prediction)."""
  times, _ = step_times(tf.range(num_steps), num_steps)
  signal_rates, noise_rates = schedule.rates(times)
  scales = step_guidance_scale(guidance_scale, signal_rates, noise_rates, guidance_min_sigma,
                               guidance_max_sigma)
  doubled_steps = tf.reduce_sum(tf.cast(tf.logical_not(runs_one_half(scales)), tf.int32))
  return int(num_steps + doubled_steps)


def sample(model: Callable, noise: tf.Tensor, labels: tf.Tensor, num_steps, guidance_scale,
           schedule: schedule_lib.CosineSchedule, prediction: str, null_label: int,
           sampler: str = "ddim", seed=0, guidance_min_sigma: float = 0.0,
           guidance_max_sigma: Optional[float] = None) -> tf.Tensor:
  """Runs the reverse process from `noise` over `num_steps` evenly spaced times; returns x0 in [-1, 1].

  "ddim" is deterministic (eta = 0); "ancestral" is DDPM's stochastic sampler (eta = 1) over the
  same time grid; "dpmpp_2m" is DPM-Solver++(2M) (Lu et al. 2022): deterministic, second order in
  log-SNR, reusing the previous step's x0 estimate so it costs one guided evaluation per step like
  DDIM. The predicted clean images are clipped to the data range at every step, and the noise
  estimate is recomputed from the clipped images, so the two stay consistent (without this, strong
  guidance drifts off the data range and more steps make samples worse). Guidance above 1 applies
  only at noise levels in [guidance_min_sigma, guidance_max_sigma] (step_guidance_scale); the
  defaults guide every step.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; expected one of {SAMPLERS}")
  eta = 1.0 if sampler == "ancestral" else 0.0
  num_steps = tf.cast(num_steps, tf.int32)
  batch_size = tf.shape(noise)[0]

  def denoise_step(step, noisy_images, previous_pred_images, previous_log_snr_step):
    times, next_times = step_times(step, num_steps)
    signal_rates, noise_rates = schedule.rates(times)
    next_signal_rates, next_noise_rates = schedule.rates(next_times)

    diffusion_times = tf.fill([batch_size], times)
    scale = step_guidance_scale(guidance_scale, signal_rates, noise_rates, guidance_min_sigma,
                                guidance_max_sigma)
    predictions = guided_prediction(model, noisy_images, diffusion_times, labels, scale,
                                    null_label)
    pred_images, _ = schedule_lib.split_prediction(predictions, noisy_images, signal_rates,
                                                   noise_rates, prediction)
    pred_images = tf.clip_by_value(pred_images, -1.0, 1.0)
    pred_noises = (noisy_images - signal_rates * pred_images) / noise_rates
    if sampler == "dpmpp_2m":
      next_noisy_images, log_snr_step = dpmpp_2m_update(
          step, num_steps, noisy_images, pred_images, previous_pred_images, previous_log_snr_step,
          signal_rates, noise_rates, next_signal_rates, next_noise_rates)
      return step + 1, next_noisy_images, pred_images, log_snr_step

    # DDIM's sigma: 0 for eta = 0; the DDPM posterior std for eta = 1.
    step_noise_std = eta * (next_noise_rates / noise_rates) * tf.sqrt(
        tf.maximum(1.0 - tf.square(signal_rates / next_signal_rates), 0.0))
    direction_rates = tf.sqrt(tf.maximum(tf.square(next_noise_rates) - tf.square(step_noise_std), 0.0))
    next_noisy_images = next_signal_rates * pred_images + direction_rates * pred_noises
    if eta > 0:
      step_noises = per_sample_normal(seed, batch_size, _STEP_NOISE_STREAM + step)
      next_noisy_images += step_noise_std * step_noises
    return step + 1, next_noisy_images, pred_images, previous_log_snr_step

  _, _, pred_images, _ = tf.while_loop(
      lambda step, *_: step < num_steps,
      denoise_step,
      (tf.constant(0), tf.cast(noise, tf.float32), tf.zeros_like(noise, tf.float32),
       tf.constant(0.0)))
  return pred_images


def _log_snr(signal_rates, noise_rates):
  """lambda = log(signal / noise), the variable DPM-Solver integrates over."""
  return tf.math.log(signal_rates) - tf.math.log(noise_rates)


def dpmpp_2m_update(step, num_steps, noisy_images, pred_images, previous_pred_images,
                    previous_log_snr_step, signal_rates, noise_rates, next_signal_rates,
                    next_noise_rates):
  """One DPM-Solver++(2M) step; returns (next noisy images, this step's log-SNR increment h).

  x_next = (noise_next / noise) x - signal_next (exp(-h) - 1) D, with D the x0 estimate
  extrapolated linearly in log-SNR from this and the previous step:
  D = x0 + (h / (2 h_prev)) (x0 - x0_prev). The first step has no history and the last step is
  first order as well (diffusers' `lower_order_final`: its h is the largest, and extrapolating over
  it overshoots at few steps); a first-order step is exactly DDIM.
  """
  log_snr_step = _log_snr(next_signal_rates, next_noise_rates) - _log_snr(signal_rates, noise_rates)
  second_order = tf.logical_and(step > 0, step < num_steps - 1)
  extrapolation = tf.where(
      second_order, log_snr_step / (2.0 * tf.maximum(previous_log_snr_step, 1e-12)), 0.0)
  data_estimate = pred_images + extrapolation * (pred_images - previous_pred_images)
  next_noisy_images = ((next_noise_rates / noise_rates) * noisy_images
                       - next_signal_rates * tf.math.expm1(-log_snr_step) * data_estimate)
  return next_noisy_images, log_snr_step


def denoise_once(model: Callable, noisy_images, diffusion_times, labels,
                 schedule: schedule_lib.CosineSchedule, prediction: str, clip: bool = True,
                 training: bool = False):
  """One network evaluation: the model's x0 estimate (clipped to [-1, 1] unless `clip` is False,
  as a training loss needs: a clipped estimate gets no gradient back) at the given times."""
  signal_rates, noise_rates = schedule.rates(diffusion_times)
  signal_rates = signal_rates[:, None, None, None]
  noise_rates = noise_rates[:, None, None, None]
  predictions = model([noisy_images, diffusion_times, tf.cast(labels, tf.int32)], training=training)
  pred_images, _ = schedule_lib.split_prediction(predictions, noisy_images, signal_rates,
                                                 noise_rates, prediction)
  return tf.clip_by_value(pred_images, -1.0, 1.0) if clip else pred_images


def denoise_unit_range(model: Callable, noisy_images, noise_sigma, labels,
                       schedule: schedule_lib.CosineSchedule, prediction: str, clip: bool = True,
                       training: bool = False):
  """One-step x0 estimate for images in [0, 1] carrying Gaussian noise of std `noise_sigma` (in
  [0, 1] units); returns images in [0, 1] (unclamped if `clip` is False, see denoise_once)."""
  noisy = transform.from_unit_range(noisy_images)
  # In model space the noise std doubles; the matching time has noise_rate / signal_rate = 2 sigma,
  # and scaling by signal_rate turns (x0 + 2 sigma n) into signal * x0 + noise * n.
  times = schedule.time_at_noise_ratio(2.0 * noise_sigma)
  signal_rate, _ = schedule.rates(times)
  pred_images = denoise_once(model, signal_rate * noisy, tf.fill([tf.shape(noisy)[0]], times),
                             labels, schedule, prediction, clip, training)
  return transform.to_unit_range(pred_images, clip)
