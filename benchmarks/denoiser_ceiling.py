"""What the `cpu` profile's network can reach as a denoiser at the reference protocol's noise alone.

  python -m benchmarks.denoiser_ceiling [--objectives mse log_mse] [--experiment wide48]

The diffusion model is scored on one noise level (the reference protocol: images in [0, 1],
Gaussian noise of std 0.4, clipped to [0, 1]) but trained on all of them. Here the same network,
parameterised and fed exactly as the served `denoise` signature feeds it (un-clipping, the matching
diffusion time, the null label, v-prediction), is trained on that one noise level only, on the same
number of images with the same optimizer, and scored on the protocol's 10,000 test images. So its
PSNR is about what this network and budget can buy at the protocol with nothing spent elsewhere:
an estimate from above of what the diffusion model could reach there.
Objectives: "mse", the mean squared error the diffusion loss also minimises (its minimiser is the
posterior mean); "log_mse", the mean over images of log(MSE), which is the protocol's own metric
(the mean of per-image PSNR) up to a constant factor.
`--experiment` takes a network from benchmarks.sweep's experiments (default: the profile's own).
Resumable: checkpoints and finished results live under --work-dir. Writes
benchmarks/results/<name>.json and <name>.md.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, Optional  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks import sweep  # noqa: E402
from components.diffusion_evaluator import metrics as metrics_lib  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from pipeline.config import NUM_CLASSES, PipelineConfig  # noqa: E402
from components.mnist_example_gen import idx  # noqa: E402
from trainer_module import clipped_noise, samplers, transform  # noqa: E402
from trainer_module import train as train_lib  # noqa: E402

OBJECTIVES = ("mse", "log_mse")
# Keeps log(MSE) finite for an image denoised exactly; far below any MSE seen (PSNR 60 dB).
_LOG_MSE_FLOOR = 1e-6


class ProtocolDenoiserTrainer(train_lib.DiffusionTrainer):
  """The diffusion trainer with its loss replaced: one noise level, the protocol's clipped inputs."""

  def __init__(self, config: PipelineConfig, objective: str):
    if objective not in OBJECTIVES:
      raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    super().__init__(config)
    self.objective = objective
    self.noise_sigma = config.eval.denoise_sigma

  def denoise(self, model, noisy_images, training=False):
    """[0, 1] noisy (clipped) images -> [0, 1] estimates, by the served `denoise`'s own math minus
    its final clip, so the loss keeps its gradient at the bounds."""
    noisy = clipped_noise.unclip(noisy_images, self.noise_sigma)
    null_labels = tf.fill([tf.shape(noisy)[0]], NUM_CLASSES)
    return samplers.denoise_unit_range(model, noisy, self.noise_sigma, null_labels, self.schedule,
                                       self.config.diffusion.prediction, clip=False,
                                       training=training)

  def loss(self, images, labels, training=True):
    del labels  # the protocol gives the denoiser the noisy image alone
    clean = transform.to_unit_range(images)  # training images lie in [-1, 1]
    noisy = tf.clip_by_value(clean + self.noise_sigma * self.rng.normal(tf.shape(clean)), 0.0, 1.0)
    per_image = tf.reduce_mean(tf.square(self.denoise(self.model, noisy, training) - clean), axis=[1, 2, 3])
    if self.objective == "log_mse":
      return tf.reduce_mean(tf.math.log(per_image + _LOG_MSE_FLOOR))
    return tf.reduce_mean(per_image)


def protocol_psnr(trainer: ProtocolDenoiserTrainer, data_dir: str,
                  num_images: Optional[int] = None) -> Dict[str, Any]:
  """The reference protocol on the test split with the EMA weights, as the Evaluator scores it."""
  eval_config = trainer.config.eval
  pixels, _ = idx.load_split(data_dir, "t10k")
  clean = (pixels[..., None].astype(np.float32) / 255.0)[:num_images]
  noisy = metrics_lib.add_noise(clean, eval_config.denoise_sigma, eval_config.seed)
  denoise = tf.function(lambda batch: tf.clip_by_value(trainer.denoise(trainer.ema_model, batch), 0.0, 1.0))
  denoised = np.concatenate([denoise(noisy[start:start + eval_config.batch_size]).numpy()
                             for start in range(0, len(noisy), eval_config.batch_size)])
  return metrics_lib.denoising_metrics(clean, denoised)


def run_objective(objective: str, experiment: str, config: PipelineConfig, data_dir: str,
                  work_root: str, command: str,
                  num_eval_images: Optional[int] = None) -> Dict[str, Any]:
  work_dir = os.path.join(work_root, f"{experiment}_{objective}_steps{config.train.train_steps}")
  result_path = os.path.join(work_dir, "result.json")
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  trainer = ProtocolDenoiserTrainer(config, objective)
  start = time.perf_counter()
  training = train_lib.train_diffusion(trainer, sweep.mnist_dataset(data_dir, config),
                                       os.path.join(work_dir, "checkpoints"))
  result = {"experiment": experiment, "objective": objective, "command": command, "train": config.train.to_dict(),
            "unet": config.unet.to_dict(), "noise_sigma": config.eval.denoise_sigma,
            "training": {**training, "parameters": trainer.model.count_params()},
            "protocol": protocol_psnr(trainer, data_dir, num_eval_images),
            "wall_s": round(time.perf_counter() - start, 1)}
  os.makedirs(work_dir, exist_ok=True)
  with open(result_path, "w") as f:
    json.dump(result, f, indent=2)
  return result


def markdown_table(results: Dict[str, Any]) -> str:
  lines = ["| network | objective | parameters | train steps x batch | train s | PSNR dB | MSE | RMSE |",
           "|---|---|---|---|---|---|---|---|"]
  for result in results["objectives"]:
    train, protocol = result["train"], result["protocol"]
    lines.append(f"| {result['experiment']} | {result['objective']} | "
                 f"{result['training']['parameters']:,} | {train['train_steps']} x {train['batch_size']} | "
                 f"{result['training']['wall_seconds']:.0f} | {protocol['psnr']:.2f} | "
                 f"{protocol['mse']:.5f} | {protocol['rmse']:.4f} |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data-dir", default=config_lib.EMBEDDED_MNIST_DIR)
  parser.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=list(OBJECTIVES))
  parser.add_argument("--profile", default="cpu", choices=sorted(config_lib.PROFILES))
  parser.add_argument("--experiment", default="baseline", choices=sorted(sweep.EXPERIMENTS),
                      help="the network (and training) of this sweep experiment")
  parser.add_argument("--train-steps", type=int, default=None, help="default: the profile's")
  parser.add_argument("--work-dir", default=os.path.join("runs", "denoiser_ceiling"))
  parser.add_argument("--results-dir", default=sweep.RESULTS_DIR)
  parser.add_argument("--name", default="denoiser_ceiling", help="results file stem")
  parser.add_argument("--num-eval-images", type=int, default=None,
                      help="score the first N test images (default: all 10,000, as the protocol)")
  args = parser.parse_args(argv)
  base = config_lib.profile(args.profile)
  config = sweep.experiment_config(args.experiment, args.train_steps or base.train.train_steps, base)
  results = sweep.read_results(args.results_dir, args.name, {"objectives": []})
  for objective in args.objectives:
    command = (f"python -m benchmarks.denoiser_ceiling --profile {args.profile} --experiment "
               f"{args.experiment} --objectives {objective} --train-steps {config.train.train_steps}")
    result = run_objective(objective, args.experiment, config, args.data_dir, args.work_dir,
                           command, args.num_eval_images)
    key = (args.experiment, objective, config.train.train_steps)
    results["objectives"] = [r for r in results["objectives"]
                             if (r["experiment"], r["objective"], r["train"]["train_steps"]) != key
                             ] + [result]
    results["machine"] = machine.describe()
    sweep.write_results(args.results_dir, args.name, results, markdown_table(results))


if __name__ == "__main__":
  main()
