"""Training throughput of the diffusion U-Net: images/s and the share of the machine's matmul rate.

  python -m benchmarks.train_throughput --profile cpu --steps 20
Writes benchmarks/results/train_throughput_<profile>.json. A training step costs about three
forward passes (forward, and backward for activations and weights).
"""

import sys
import time

import tensorflow as tf

from benchmarks import common
from core import config as config_lib
from core.config import IMAGE_SIZE, NUM_CLASSES
from trainer_module import flops
from trainer_module import train as train_lib


def measure(config: config_lib.PipelineConfig, steps: int) -> dict:
  trainer = train_lib.DiffusionTrainer(config)
  batch_size = config.train.batch_size
  images = tf.random.uniform([batch_size, IMAGE_SIZE, IMAGE_SIZE, 1], -1.0, 1.0, seed=0)
  labels = tf.random.uniform([batch_size], 0, NUM_CLASSES, tf.int32, seed=0)
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
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = common.argument_parser(__doc__)
  common.add_profile(parser, "whose network, batch size and optimizer to train")
  parser.add_argument("--steps", type=int, default=20, help="training steps timed")
  common.add_results_dir(parser)
  args = parser.parse_args(argv)
  result = {**common.provenance("train_throughput", argv),
            **measure(config_lib.profile(args.profile), args.steps)}
  path = common.write_json(result, args.results_dir, f"train_throughput_{args.profile}.json")
  for key in ("parameters", "images_per_second", "train_gflop_per_image", "achieved_gflops",
              "machine_matmul_gflops", "share_of_matmul_rate"):
    value = result[key]
    print(f"{key:24s} {value:.4g}" if isinstance(value, float) else f"{key:24s} {value}")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
