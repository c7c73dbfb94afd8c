"""Weight-average (EMA) lengths from one training: each decay's average, exported as the profile's sampler.

  python -m benchmarks.ema_length [--profile full] [--decays 0.999 0.9995 0.9998] \
      [--train-steps N] [--work-dir runs/ema_length]
The EMA does not feed back into training, so every decay sees the same raw weights: one run of
the profile's training (the sweep's data and the Trainer's own loop, train.train_diffusion) keeps
one average per decay, each with the Trainer's warm-up, decay = min(ema_decay, (1 + step) /
(10 + step)), and exports each one as <work-dir>/model_ema<decay> with the profile's sampler.
Score them with benchmarks.quality. Resumable: the checkpoint holds every average.
A decay above the warm-up's last value, 1 - 9 / (10 + steps), never binds: every such decay gives
the warm-up's own average (weights growing about as step^8, a width of about 9% of the training),
so at 28,800 steps 0.9998 and 0.9999 are the same average.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from typing import Dict, Sequence  # noqa: E402

import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks import sweep  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from trainer_module import export  # noqa: E402
from trainer_module import train as train_lib  # noqa: E402
from trainer_module.unet import build_unet  # noqa: E402


def _decay_key(decay: float) -> str:
  """0.9995 -> "0_9995": a name for checkpoint keys and layers."""
  return f"{decay:g}".replace(".", "_")


class MultiEmaTrainer(train_lib.DiffusionTrainer):
  """The Trainer's DiffusionTrainer with extra weight averages, one per decay, updated after each
  step exactly as its own `ema_model` is."""

  def __init__(self, config: PipelineConfig, extra_decays: Sequence[float]):
    super().__init__(config)
    self.extra_emas: Dict[float, tf.keras.Model] = {}
    for decay in extra_decays:
      average = build_unet(config.unet, name=f"ema_unet_{_decay_key(decay)}")
      average.set_weights(self.model.get_weights())
      self.extra_emas[decay] = average

  def checkpoint(self) -> tf.train.Checkpoint:
    # Keyed by decay, not position: a resume with another list of decays restores each average
    # into its own decay (and starts a new one from the raw weights' copy).
    extras = {f"ema_{_decay_key(decay)}": model for decay, model in self.extra_emas.items()}
    return tf.train.Checkpoint(model=self.model, ema_model=self.ema_model,
                               optimizer=self.optimizer, step=self.step, rng=self.rng, **extras)

  @tf.function(autograph=False)
  def train_step(self, images, labels):
    step = tf.cast(self.step, tf.float32)  # the step the parent's own EMA update uses
    loss = super().train_step(images, labels)
    for ema_decay, average in self.extra_emas.items():
      train_lib.update_average(average, self.model, train_lib.ema_decay_at(step, ema_decay))
    return loss

  def averages(self) -> Dict[float, tf.keras.Model]:
    """decay -> its averaged network, the Trainer's own `ema_decay` included."""
    return {self.config.train.ema_decay: self.ema_model, **self.extra_emas}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--profile", default="full", choices=sorted(config_lib.PROFILES))
  parser.add_argument("--decays", type=float, nargs="+", default=[0.999, 0.9995, 0.9998],
                      help="the first is the Trainer's own ema_decay")
  parser.add_argument("--train-steps", type=int, help="default: the profile's")
  parser.add_argument("--data-dir", default=config_lib.EMBEDDED_MNIST_DIR)
  parser.add_argument("--work-dir", default=os.path.join("runs", "ema_length"))
  args = parser.parse_args(argv)

  config = config_lib.profile(args.profile)
  train = config.train
  if args.train_steps:
    train = dataclasses.replace(train, train_steps=args.train_steps)
  # The profile's own decay is the Trainer's ema_model; the others are extra averages.
  train = dataclasses.replace(train, ema_decay=args.decays[0])
  config = dataclasses.replace(config, train=train)
  last_warmup = float(train_lib.ema_decay_at(tf.constant(train.train_steps - 1.0), 1.0))
  for decay in args.decays:
    if decay > last_warmup:
      print(f"decay {decay:g} never binds in {train.train_steps} steps (the warm-up ends at "
            f"{last_warmup:.5f}): it is the warm-up's own average")
  trainer = MultiEmaTrainer(config, args.decays[1:])
  summary = train_lib.train_diffusion(trainer, sweep.mnist_dataset(args.data_dir, config),
                                      os.path.join(args.work_dir, "checkpoints"))
  exported = {}
  for decay, average in trainer.averages().items():
    model_dir = os.path.join(args.work_dir, f"model_ema{decay:g}")
    export.export_sampler(average, config.diffusion, config.sampler, model_dir,
                          unet_config=config.unet)
    exported[f"{decay:g}"] = model_dir
  with open(os.path.join(args.work_dir, "training.json"), "w") as f:
    json.dump({"profile": args.profile, "config": config.to_dict(), "training": summary,
               "models": exported, "machine": machine.describe()}, f, indent=2)
  print(json.dumps(exported, indent=2))


if __name__ == "__main__":
  main()
