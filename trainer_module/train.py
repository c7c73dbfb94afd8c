"""The diffusion Trainer's run_fn: DDPM-family training (v or eps target, optional min-SNR
weighting), EMA and resumable checkpoints, then export of the guided sampler (trainer_module/export.py).

TFX calls `run_fn(fn_args)`; `fn_args.custom_config["config"]` carries the PipelineConfig JSON.
`train_diffusion` is the plain training loop, usable without TFX (tests, benchmarks).
"""

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
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


class NonFiniteLossError(RuntimeError):
  """Training stopped at a NaN or infinite loss; the last good checkpoint is kept."""


def distribution_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy TrainConfig.distribution names ("none": TF's default strategy,
  one device, the plain loop). Create it before other TF work: multi_worker sets up collective
  ops from TF_CONFIG."""
  if name == "none":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"Unknown distribution {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes checkpoints, summaries and the export: always outside
  multi_worker; there, the "chief" task, or worker 0 of a cluster without one."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and "chief" not in resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def writable_dir(path: str, chief: bool):
  """`path` on the chief; elsewhere a temporary directory, deleted afterwards. Every worker of a
  multi-worker run saves (saving may run collective ops), and only the chief's copy is kept, as
  TF's multi-worker training guide prescribes."""
  if chief:
    yield path
    return
  scratch = tempfile.mkdtemp(prefix="worker_save_")
  try:
    yield scratch
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


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
  """Owns the network, its EMA copy, the optimizer and the step; one `train_step` per batch.

  Under a `strategy` (distribution_strategy) the variables are mirrored on every replica and a
  batch given to train_step is the global batch, split across replicas (from
  `strategy.experimental_distribute_dataset`): the loss is the sum over replicas of each one's
  share scaled by the global batch, so learning rate, EMA and batch size mean the same whatever
  the replica count. The random generator, created under the strategy, folds in each replica's
  id: replicas draw different noise and times, reproducibly from the seed.
  """

  def __init__(self, config: PipelineConfig, strategy: Optional[tf.distribute.Strategy] = None):
    super().__init__(name="diffusion_trainer")
    self.config = config
    self.strategy = strategy or tf.distribute.get_strategy()
    with self.strategy.scope():
      # False under TF's default strategy: one device, plain variables.
      self.distributed = tf.distribute.has_strategy()
      self._build(config)

  def _build(self, config: PipelineConfig):
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
    if int(self.start_step.numpy()) == 0:
      return train.train_steps
    return int(self.start_step.numpy()) + train.warm_start_steps

  def draw(self, images):
    """The random part of a batch's loss: which labels become the null class, the diffusion
    times and the noise, from this replica's stream."""
    diffusion = self.config.diffusion
    batch_size = tf.shape(images)[0]
    dropped = self.rng.uniform([batch_size]) < diffusion.label_dropout
    diffusion_times = schedule_lib.sample_training_times(
        self.rng, batch_size, self.schedule, diffusion.training_times, diffusion.log_sigma_mean,
        diffusion.log_sigma_std)
    return dropped, diffusion_times, self.rng.normal(tf.shape(images))

  def loss(self, images, labels, training=True, global_batch_size=None):
    """Min-SNR weighted MSE on the chosen target at diffusion times drawn as configured: the mean
    over the batch, or the sum over it divided by `global_batch_size` (a replica's share)."""
    diffusion = self.config.diffusion
    batch_size = tf.shape(images)[0]
    dropped, diffusion_times, noises = self.draw(images)
    labels = tf.where(dropped, tf.fill([batch_size], NULL_LABEL), labels)
    signal_rates, noise_rates = self.schedule.rates(diffusion_times[:, None, None, None])
    noisy_images = schedule_lib.add_noise(images, noises, signal_rates, noise_rates)
    targets = schedule_lib.training_target(images, noises, signal_rates, noise_rates,
                                           diffusion.prediction)
    predictions = self.model([noisy_images, diffusion_times, labels], training=training)
    per_example = tf.reduce_mean(tf.square(predictions - targets), axis=[1, 2, 3])
    weights = schedule_lib.min_snr_weights(signal_rates, noise_rates, diffusion.min_snr_gamma,
                                           diffusion.prediction)
    weighted = tf.reshape(weights, [-1]) * per_example
    if global_batch_size is None:
      return tf.reduce_mean(weighted)
    return tf.reduce_sum(weighted) / tf.cast(global_batch_size, weighted.dtype)

  def _replica_step(self, images, labels):
    # One replica's share: the optimizer sums the replicas' gradients (all-reduce).
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    with tf.GradientTape() as tape:
      loss = self.loss(images, labels, global_batch_size=tf.shape(images)[0] * replicas)
    variables = self.model.trainable_variables
    self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  @tf.function(autograph=False)
  def train_step(self, images, labels):
    """One step on a global batch (plain tensors, or a distributed dataset's per-replica
    values); returns the loss over the global batch."""
    losses = self.strategy.run(self._replica_step, args=(images, labels))
    loss = self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)
    update_average(self.ema_model, self.model,
                   ema_decay_at(tf.cast(self.step, tf.float32), self.config.train.ema_decay),
                   self.strategy)
    self.step.assign_add(1)
    return loss


def ema_decay_at(step: tf.Tensor, ema_decay: float) -> tf.Tensor:
  """The EMA decay at `step` (float32): a warm-up, 0.1 at step 0 and growing toward 1, capped at
  `ema_decay`, so early averages are not stale."""
  return tf.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def update_average(average, model, decay: tf.Tensor,
                   strategy: Optional[tf.distribute.Strategy] = None) -> None:
  """One EMA step of `average`'s weights toward `model`'s (on every replica's copy: the
  replicas' weights are equal after the all-reduced update, so their averages stay equal)."""
  strategy = strategy or tf.distribute.get_strategy()

  def ema_update(ema_variable, variable):
    return ema_variable.assign(decay * ema_variable + (1.0 - decay) * variable)

  for ema_variable, variable in zip(average.weights, model.weights):
    strategy.extended.update(ema_variable, ema_update, args=(variable,))


def checkpoint_dir_for(checkpoint_root: str, train_files: Iterable[str], config: PipelineConfig,
                       base_model: Optional[str] = None) -> str:
  """A directory that is the same for a retry of the same training (same data, same settings,
  same base model).

  TFX gives every execution a new output directory, so checkpoints there would not survive a
  failed run; keyed by inputs, training settings and the code version, a retried Trainer resumes
  where it stopped, and a changed network never tries to load an incompatible checkpoint.
  """
  # poison_step is left out: a rerun without the fault resumes from the poisoned run's last
  # good checkpoint.
  train_settings = {k: v for k, v in config.train.to_dict().items() if k != "poison_step"}
  key = {"files": sorted(train_files), "code": code_version(), "unet": config.unet.to_dict(),
         "diffusion": config.diffusion.to_dict(), "train": train_settings}
  if base_model:
    key["base_model"] = base_model
  key = json.dumps(key, sort_keys=True)
  return os.path.join(checkpoint_root, hashlib.sha256(key.encode()).hexdigest()[:16])


# Workers shard a global batch's examples, not the input files: a span may have fewer files than
# there are workers, and every worker's stream must stay aligned with the step for resuming.
_DATA_SHARDING = tf.data.Options()
_DATA_SHARDING.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA


def poisoned(dataset: tf.data.Dataset, index: int) -> tf.data.Dataset:
  """`dataset` with the images of its batch `index` (0-based) replaced by NaN: the fault
  TrainConfig.poison_step injects. A negative index poisons nothing."""
  def poison(position, batch):
    images, labels = batch
    hit = tf.equal(position, index)
    return tf.where(hit, tf.fill(tf.shape(images), float("nan")), images), labels
  return dataset.enumerate().map(poison)


def _describe_checkpoint(path: Optional[str], checkpoint_dir: str) -> str:
  if not path:
    return f"none in {checkpoint_dir}"
  return f"step {path.rsplit('-', 1)[-1]} in {checkpoint_dir}"


def train_diffusion(trainer: DiffusionTrainer, dataset: tf.data.Dataset, checkpoint_dir: str,
                    log_dir: Optional[str] = None) -> dict:
  """Trains until `config.train.train_steps`, resuming from `checkpoint_dir` when it holds one.

  `dataset` is the whole training stream from step 0, in the same order on every call (seeded
  shuffles): a trainer at step k, restored from a checkpoint or stepped by hand, starts at its
  batch k, so a resumed run sees the batches an uninterrupted one would. Its batches are global
  batches; under a strategy they are split across the replicas.

  Raises NonFiniteLossError at the first step whose loss is NaN or infinite, before anything of
  that step is saved: the checkpoints written so far stay, and the caller exports nothing. The
  loss of every step is fetched to the host anyway (the loop's pacing), so the check costs no
  extra synchronisation.
  """
  train_config = trainer.config.train
  strategy = trainer.strategy
  chief = is_chief(strategy)
  # Every worker restores from the chief's directory; only the chief's saves are kept.
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest:
    trainer.checkpoint().restore(latest)
    logging.info("Resumed from %s at step %d", latest, int(trainer.step.numpy()))
  writer = (tf.summary.create_file_writer(log_dir) if log_dir and chief
            else tf.summary.create_noop_writer())
  total_steps = trainer.final_step
  # Speed is reported against what the machine can do: achieved FLOP/s over its matmul rate.
  flops_per_image = flops_lib.train_flops_per_image(trainer.model)
  machine_flops = flops_lib.matmul_flops_per_second()
  # loss stays None when the checkpoint already holds all steps (a retry after training finished).
  started, window_start, window_steps, loss = time.time(), time.time(), 0, None
  images_per_second = 0.0
  # Skipping reads and decodes the consumed batches again: seconds, against minutes of training.
  dataset = dataset.skip(int(trainer.step.numpy()) - int(trainer.start_step.numpy()))
  if train_config.poison_step is not None:
    dataset = poisoned(dataset, train_config.poison_step - 1 - int(trainer.step.numpy()))
  # Each global batch split across the replicas (TF's default strategy passes it through).
  dataset = strategy.experimental_distribute_dataset(dataset.with_options(_DATA_SHARDING))
  iterator = iter(dataset)
  with writable_dir(checkpoint_dir, chief) as save_dir:
    manager = tf.train.CheckpointManager(trainer.checkpoint(), save_dir, max_to_keep=2)
    while int(trainer.step.numpy()) < total_steps:
      images, labels = next(iterator)
      loss = float(trainer.train_step(images, labels))
      window_steps += 1
      step = int(trainer.step.numpy())
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"loss became {loss} at step {step}; last good checkpoint: "
            f"{_describe_checkpoint(tf.train.latest_checkpoint(checkpoint_dir), checkpoint_dir)}")
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
  return {"final_loss": loss, "steps": int(trainer.step.numpy()),
          "wall_seconds": time.time() - started,
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
  return {"start": "warm", "base_model": base_model, "base_step": int(trainer.step.numpy())}


def export_trained(trainer: DiffusionTrainer, serving_model_dir: str) -> bool:
  """Exports the EMA network's guided sampler to `serving_model_dir` and saves the training state
  beside it; returns whether this process wrote them (the chief does).

  Every worker writes the training state (a checkpoint of distributed variables), the others to
  a scratch directory they delete. The export is the chief's alone: it is built from a plain,
  undistributed copy of the EMA weights, so it runs no collective op the others must join.
  """
  chief = is_chief(trainer.strategy)
  parent, name = os.path.split(serving_model_dir.rstrip("/"))
  with writable_dir(parent, chief) as state_parent:
    save_training_state(trainer, os.path.join(state_parent, name))
  if not chief:
    return False
  ema_model = trainer.ema_model
  if trainer.distributed:
    ema_model = build_unet(trainer.config.unet, name="ema_unet")
    ema_model.set_weights(trainer.ema_model.get_weights())
  config = trainer.config
  export.export_sampler(ema_model, config.diffusion, config.sampler, serving_model_dir,
                        unet_config=config.unet)
  return True


def train_and_export(trainer: DiffusionTrainer, dataset: tf.data.Dataset, checkpoint_dir: str,
                     serving_model_dir: str, log_dir: Optional[str] = None):
  """train_diffusion, then export_trained; returns (training summary, whether this process
  exported). A NonFiniteLossError propagates before anything is exported or saved beside it."""
  summary = train_diffusion(trainer, dataset, checkpoint_dir, log_dir=log_dir)
  logging.info("Training finished: %s", summary)
  return summary, export_trained(trainer, serving_model_dir)


def run_fn(fn_args):
  """TFX Trainer entry point for the diffusion model."""
  config = config_from_custom_config(fn_args.custom_config)
  # Before any other TF work: multi_worker configures collective ops from TF_CONFIG.
  strategy = distribution_strategy(config.train.distribution)
  dataset = data_lib.transformed_dataset(
      fn_args.train_files, fn_args.data_accessor, fn_args.transform_output,
      config.train.batch_size, config.train.seed, config.train.shuffle_buffer)
  checkpoint_root = (fn_args.custom_config.get(CHECKPOINT_ROOT_KEY)
                     or os.path.join(fn_args.model_run_dir, "checkpoints"))
  checkpoint_dir = checkpoint_dir_for(checkpoint_root, fn_args.train_files, config,
                                      fn_args.base_model)
  trainer = DiffusionTrainer(config, strategy)
  start = warm_start(trainer, fn_args.base_model)
  message = (f"warm start from {start['base_model']} at step {start['base_step']}"
             if start["start"] == "warm" else f"cold start: {start['reason']}")
  logging.info("Diffusion Trainer: %s", message)
  print(f"[train] {message}", flush=True)
  summary, exported = train_and_export(trainer, dataset, checkpoint_dir,
                                       fn_args.serving_model_dir, log_dir=fn_args.model_run_dir)
  if not exported:
    return
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training_summary.json"), "w") as f:
    json.dump({**summary, **start, "config": config.to_dict()}, f, indent=2)
