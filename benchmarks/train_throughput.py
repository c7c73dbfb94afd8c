"""Training throughput of the diffusion U-Net: images/s and the share of the machine's matmul rate.

  python -m benchmarks.train_throughput --profile cpu --steps 20
Writes benchmarks/results/train_throughput_<profile>.json. A training step costs about three
forward passes (forward, and backward for activations and weights).
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from trainer_module import flops  # noqa: E402
from trainer_module import train as train_lib  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def measure(config: config_lib.PipelineConfig, steps: int) -> dict:
  trainer = train_lib.DiffusionTrainer(config)
  batch_size = config.train.batch_size
  images = tf.random.uniform([batch_size, 28, 28, 1], -1.0, 1.0, seed=0)
  labels = tf.random.uniform([batch_size], 0, 10, tf.int32, seed=0)
  start = time.perf_counter()
  trainer.train_step(images, labels).numpy()
  trace_seconds = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    loss = trainer.train_step(images, labels)
  loss.numpy()
  seconds = time.perf_counter() - start
  images_per_second = steps * batch_size / seconds
  flops_per_image = flops.train_flops_per_image(trainer.model)
  machine_rate = flops.matmul_flops_per_second()
  return {
      "profile": config.profile, "parameters": trainer.model.count_params(),
      "batch_size": batch_size, "steps_timed": steps, "first_step_seconds": trace_seconds,
      "images_per_second": images_per_second, "seconds_per_step": seconds / steps,
      "train_gflop_per_image": flops_per_image / 1e9,
      "achieved_gflops": images_per_second * flops_per_image / 1e9,
      "machine_matmul_gflops": machine_rate / 1e9,
      "share_of_matmul_rate": images_per_second * flops_per_image / machine_rate,
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--profile", default="cpu", choices=sorted(config_lib.PROFILES))
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--results-dir", default=RESULTS_DIR)
  args = parser.parse_args(argv)
  result = {"command": f"python -m benchmarks.train_throughput --profile {args.profile} "
                       f"--steps {args.steps}",
            "machine": machine.describe(), **measure(config_lib.profile(args.profile), args.steps)}
  os.makedirs(args.results_dir, exist_ok=True)
  path = os.path.join(args.results_dir, f"train_throughput_{args.profile}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  for key in ("parameters", "images_per_second", "train_gflop_per_image", "achieved_gflops",
              "machine_matmul_gflops", "share_of_matmul_rate"):
    print(f"{key:24s} {result[key]:.4g}" if isinstance(result[key], float) else f"{key:24s} {result[key]}")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
