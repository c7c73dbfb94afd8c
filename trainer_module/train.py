"""The diffusion Trainer's run_fn: DDPM-family training (v or eps target, optional min-SNR
weighting), EMA and resumable checkpoints, then export of the guided sampler (trainer_module/export.py).

TFX calls `run_fn(fn_args)`; `fn_args.custom_config["config"]` carries the PipelineConfig JSON.
`train_diffusion` is the plain training loop, usable without TFX (tests, benchmarks).
"""

import hashlib
import json
import os
import time
from typing import Iterable, Optional, Sequence

import tensorflow as tf
import tf_keras as keras
from absl import logging

import core
from core.config import NULL_LABEL, PipelineConfig
import trainer_module
from trainer_module import data as data_lib
from trainer_module import export
from trainer_module import flops as flops_lib
from trainer_module import schedule as schedule_lib
from trainer_module.unet import build_unet

CONFIG_KEY = "config"
CHECKPOINT_ROOT_KEY = "checkpoint_root"
# The whole training state (weights, EMA, optimizer, step), saved in the Model artifact beside
# the exported SavedModel (Format-Serving), so that a later run can warm-start from it.
TRAINING_STATE_DIR = "training_state"
# The parts of PipelineConfig a Trainer depends on. Only these travel in its custom_config, so
# changing, say, an evaluation threshold does not invalidate the Trainer's cache.
DIFFUSION_TRAINER_FIELDS = ("unet", "diffusion", "train", "sampler")
CLASSIFIER_TRAINER_FIELDS = ("classifier",)


CODE_VERSION_KEY = "code_version"


# The code a Trainer's output depends on: this package and the ground it stands on (config,
# environment, serving contract). Nothing else of the project is imported by the exported model.
MODEL_CODE_DIRS = tuple(os.path.dirname(os.path.abspath(package.__file__))
                        for package in (core, trainer_module))


def code_version(package_dirs: Sequence[str] = MODEL_CODE_DIRS) -> str:
  """A hash of the Python source in `package_dirs`. run_fn is named by import path, which TFX
  does not fingerprint, so without this a changed model or training loop would be served from
  the cache."""
  digest = hashlib.sha256()
  for package_dir in package_dirs:
    for name in sorted(os.listdir(package_dir)):
      if name.endswith(".py"):
        with open(os.path.join(package_dir, name), "rb") as f:
          digest.update(f"{os.path.basename(package_dir)}/{name}".encode() + f.read())
  return digest.hexdigest()[:16]


def trainer_custom_config(config: PipelineConfig, fields, checkpoint_root: Optional[str] = None):
  """The Trainer custom_config carrying `fields` of `config` (and where to keep checkpoints)."""
  subset = {name: getattr(config, name).to_dict() for name in fields}
  custom_config = {CONFIG_KEY: json.dumps(subset, sort_keys=True), CODE_VERSION_KEY: code_version()}
  if checkpoint_root:
    custom_config[CHECKPOINT_ROOT_KEY] = checkpoint_root
  return custom_config


def config_from_custom_config(custom_config) -> PipelineConfig:
  """Rebuilds a PipelineConfig from `trainer_custom_config` output (other fields at defaults)."""
  return PipelineConfig.from_json(custom_config[CONFIG_KEY])


class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak`, then cosine decay to `final_fraction * peak` at `total_steps`."""

  def __init__(self, peak: float, warmup_steps: int, total_steps: int, final_fraction: float = 0.1):
    self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps
    self.final_fraction = final_fraction

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
    progress = tf.clip_by_value(
        (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
    cosine = 0.5 * (1.0 + tf.cos(3.14159265 * progress))
    decayed = self.peak * (self.final_fraction + (1.0 - self.final_fraction) * cosine)
    return tf.where(step < self.warmup_steps, warmup, decayed)

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps, "final_fraction": self.final_fraction}


class DiffusionTrainer(tf.Module):
  """Owns the network, its EMA copy, the optimizer and the step; one `train_step` per batch."""

  def __init__(self, config: PipelineConfig):
    super().__init__(name="diffusion_trainer")
    self.config = config
    self.schedule = export.schedule_from_config(config.diffusion)
    # Seeds the initial weights too: the same config and seed give the same model.
    keras.utils.set_random_seed(config.train.seed)
    self.model = build_unet(config.unet, name="unet")
    self.ema_model = build_unet(config.unet, name="ema_unet")
    self.ema_model.set_weights(self.model.get_weights())
    self.learning_rates = WarmupCosineDecay(
        config.train.learning_rate, config.train.warmup_steps, config.train.train_steps)
    self.optimizer = keras.optimizers.Adam(self.learning_rates)
    # Its slots now, not inside the first train_step: a tf.function that creates variables is
    # traced twice, and one trace of this step takes seconds.
    self.optimizer.build(self.model.trainable_variables)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    # The step this run started from: 0 cold, the base model's step when warm-started. The data
    # of this run is consumed from there.
    self.start_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="start_step")
    # A generator (not global seeds) so a resumed run continues the same random stream.
    self.rng = tf.random.Generator.from_seed(config.train.seed)

  def checkpoint(self) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=self.model, ema_model=self.ema_model,
                               optimizer=self.optimizer, step=self.step, rng=self.rng,
                               start_step=self.start_step)

  @property
  def final_step(self) -> int:
    """Where this run stops: train_steps cold, warm_start_steps past the base model warm."""
    train = self.config.train
    if int(self.start_step) == 0:
      return train.train_steps
    return int(self.start_step) + train.warm_start_steps

  def loss(self, images, labels, training=True):
    """Min-SNR weighted MSE on the chosen target at diffusion times drawn as configured."""
    diffusion = self.config.diffusion
    batch_size = tf.shape(images)[0]
    dropped = self.rng.uniform([batch_size]) < diffusion.label_dropout
    labels = tf.where(dropped, tf.fill([batch_size], NULL_LABEL), labels)
    diffusion_times = schedule_lib.sample_training_times(
        self.rng, batch_size, self.schedule, diffusion.training_times, diffusion.log_sigma_mean,
        diffusion.log_sigma_std)
    noises = self.rng.normal(tf.shape(images))
    signal_rates, noise_rates = self.schedule.rates(diffusion_times[:, None, None, None])
    noisy_images = schedule_lib.add_noise(images, noises, signal_rates, noise_rates)
    targets = schedule_lib.training_target(images, noises, signal_rates, noise_rates,
                                           diffusion.prediction)
    predictions = self.model([noisy_images, diffusion_times, labels], training=training)
    per_example = tf.reduce_mean(tf.square(predictions - targets), axis=[1, 2, 3])
    weights = schedule_lib.min_snr_weights(signal_rates, noise_rates, diffusion.min_snr_gamma,
                                           diffusion.prediction)
    return tf.reduce_mean(tf.reshape(weights, [-1]) * per_example)

  @tf.function(autograph=False)
  def train_step(self, images, labels):
    with tf.GradientTape() as tape:
      loss = self.loss(images, labels)
    variables = self.model.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    update_average(self.ema_model, self.model,
                   ema_decay_at(tf.cast(self.step, tf.float32), self.config.train.ema_decay))
    self.step.assign_add(1)
    return loss


def ema_decay_at(step: tf.Tensor, ema_decay: float) -> tf.Tensor:
  """The EMA decay at `step` (float32): a warm-up, 0.1 at step 0 and growing toward 1, capped at
  `ema_decay`, so early averages are not stale."""
  return tf.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def update_average(average, model, decay: tf.Tensor) -> None:
  """One EMA step of `average`'s weights toward `model`'s."""
  for ema_variable, variable in zip(average.weights, model.weights):
    ema_variable.assign(decay * ema_variable + (1.0 - decay) * variable)


def checkpoint_dir_for(checkpoint_root: str, train_files: Iterable[str], config: PipelineConfig,
                       base_model: Optional[str] = None) -> str:
  """A directory that is the same for a retry of the same training (same data, same settings,
  same base model).

  TFX gives every execution a new output directory, so checkpoints there would not survive a
  failed run; keyed by inputs, training settings and the code version, a retried Trainer resumes
  where it stopped, and a changed network never tries to load an incompatible checkpoint.
  """
  key = {"files": sorted(train_files), "code": code_version(), "unet": config.unet.to_dict(),
         "diffusion": config.diffusion.to_dict(), "train": config.train.to_dict()}
  if base_model:
    key["base_model"] = base_model
  key = json.dumps(key, sort_keys=True)
  return os.path.join(checkpoint_root, hashlib.sha256(key.encode()).hexdigest()[:16])


def train_diffusion(trainer: DiffusionTrainer, dataset: tf.data.Dataset, checkpoint_dir: str,
                    log_dir: Optional[str] = None) -> dict:
  """Trains until `config.train.train_steps`, resuming from `checkpoint_dir` when it holds one.

  `dataset` is the whole training stream from step 0, in the same order on every call (seeded
  shuffles): a trainer at step k, restored from a checkpoint or stepped by hand, starts at its
  batch k, so a resumed run sees the batches an uninterrupted one would.
  """
  train_config = trainer.config.train
  manager = tf.train.CheckpointManager(trainer.checkpoint(), checkpoint_dir, max_to_keep=2)
  if manager.latest_checkpoint:
    trainer.checkpoint().restore(manager.latest_checkpoint)
    logging.info("Resumed from %s at step %d", manager.latest_checkpoint, int(trainer.step))
  writer = tf.summary.create_file_writer(log_dir) if log_dir else tf.summary.create_noop_writer()
  total_steps = trainer.final_step
  # Speed is reported against what the machine can do: achieved FLOP/s over its matmul rate.
  flops_per_image = flops_lib.train_flops_per_image(trainer.model)
  machine_flops = flops_lib.matmul_flops_per_second()
  # loss stays None when the checkpoint already holds all steps (a retry after training finished).
  started, window_start, window_steps, loss = time.time(), time.time(), 0, None
  images_per_second = 0.0
  # Skipping reads and decodes the consumed batches again: seconds, against minutes of training.
  iterator = iter(dataset.skip(int(trainer.step) - int(trainer.start_step)))
  while int(trainer.step) < total_steps:
    images, labels = next(iterator)
    loss = float(trainer.train_step(images, labels))
    window_steps += 1
    step = int(trainer.step)
    if step % train_config.log_every_steps == 0 or step == total_steps:
      elapsed = time.time() - window_start
      images_per_second = window_steps * train_config.batch_size / max(elapsed, 1e-9)
      learning_rate = float(trainer.learning_rates(step))
      share = images_per_second * flops_per_image / machine_flops
      logging.info("diffusion step %d/%d loss %.4f lr %.2e %.1f images/s (%.0f%% of matmul rate)",
                   step, total_steps, loss, learning_rate, images_per_second, 100 * share)
      print(f"[train] step {step}/{total_steps} loss {loss:.4f} lr {learning_rate:.2e} "
            f"{images_per_second:.1f} images/s, {share:.0%} of the machine's "
            f"{machine_flops / 1e9:.0f} GFLOP/s matmul rate", flush=True)
      with writer.as_default():
        tf.summary.scalar("loss", loss, step=step)
        tf.summary.scalar("learning_rate", learning_rate, step=step)
        tf.summary.scalar("images_per_second", images_per_second, step=step)
      window_start, window_steps = time.time(), 0
    if step % train_config.checkpoint_every_steps == 0 or step == total_steps:
      manager.save(checkpoint_number=step)
  writer.flush()
  return {"final_loss": loss, "steps": int(trainer.step), "wall_seconds": time.time() - started,
          "images_per_second": images_per_second,
          "train_gflop_per_image": flops_per_image / 1e9,
          "machine_matmul_gflops": machine_flops / 1e9,
          "share_of_matmul_rate": images_per_second * flops_per_image / machine_flops}


def _state_dir(serving_model_dir: str) -> str:
  return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), TRAINING_STATE_DIR)


def _network_record(config: PipelineConfig) -> dict:
  # What a saved training state must match to be continued: the network and its noise schedule
  # (as JSON reads it back: lists, not tuples).
  return json.loads(json.dumps({"unet": config.unet.to_dict(),
                                "diffusion": config.diffusion.to_dict()}))


def save_training_state(trainer: DiffusionTrainer, serving_model_dir: str) -> str:
  """Writes the whole training state beside the exported model; returns its directory."""
  state_dir = _state_dir(serving_model_dir)
  trainer.checkpoint().write(os.path.join(state_dir, "state"))
  with tf.io.gfile.GFile(os.path.join(state_dir, "network.json"), "w") as f:
    json.dump(_network_record(trainer.config), f, sort_keys=True)
  return state_dir


def warm_start(trainer: DiffusionTrainer, base_model: Optional[str]) -> dict:
  """Continues from the training state saved beside `base_model` (a Model artifact's serving
  path) when it was trained with this network and schedule; says how the run starts and why."""
  if not base_model:
    return {"start": "cold", "reason": "no blessed model to start from"}
  state_dir = _state_dir(base_model)
  record_path = os.path.join(state_dir, "network.json")
  if not tf.io.gfile.exists(record_path):
    return {"start": "cold", "reason": f"{base_model} has no saved training state"}
  with tf.io.gfile.GFile(record_path) as f:
    if json.load(f) != _network_record(trainer.config):
      return {"start": "cold", "reason": "the network or noise schedule changed since "
                                         f"{base_model}"}
  trainer.checkpoint().read(os.path.join(state_dir, "state")).assert_existing_objects_matched()
  trainer.start_step.assign(trainer.step)
  return {"start": "warm", "base_model": base_model, "base_step": int(trainer.step)}


def run_fn(fn_args):
  """TFX Trainer entry point for the diffusion model."""
  config = config_from_custom_config(fn_args.custom_config)
  dataset = data_lib.transformed_dataset(
      fn_args.train_files, fn_args.data_accessor, fn_args.transform_output,
      config.train.batch_size, config.train.seed, config.train.shuffle_buffer)
  checkpoint_root = (fn_args.custom_config.get(CHECKPOINT_ROOT_KEY)
                     or os.path.join(fn_args.model_run_dir, "checkpoints"))
  checkpoint_dir = checkpoint_dir_for(checkpoint_root, fn_args.train_files, config,
                                      fn_args.base_model)
  trainer = DiffusionTrainer(config)
  start = warm_start(trainer, fn_args.base_model)
  message = (f"warm start from {start['base_model']} at step {start['base_step']}"
             if start["start"] == "warm" else f"cold start: {start['reason']}")
  logging.info("Diffusion Trainer: %s", message)
  print(f"[train] {message}", flush=True)
  summary = train_diffusion(trainer, dataset, checkpoint_dir, log_dir=fn_args.model_run_dir)
  logging.info("Training finished: %s", summary)
  export.export_sampler(trainer.ema_model, config.diffusion, config.sampler,
                        fn_args.serving_model_dir, unet_config=config.unet)
  save_training_state(trainer, fn_args.serving_model_dir)
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training_summary.json"), "w") as f:
    json.dump({**summary, **start, "config": config.to_dict()}, f, indent=2)
