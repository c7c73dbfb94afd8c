"""What one network call costs for each U-Net of the sweep: parameters, GFLOP and milliseconds.

  python -m benchmarks.forward_cost [--rows 20] [--repeats 10] [--only baseline patch2 ...]
A sampling step of a guided request for 10 digits is one forward pass of 20 rows (conditional and
unconditional halves), so --rows 20 times the step count is the serving cost of issue 4's
"10 digits at 20 steps" request, without the sampler around it. Best of three timings of
--repeats calls each, after a warm-up, in graph mode. Writes benchmarks/results/forward_cost.json.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks import sweep  # noqa: E402
from pipeline.config import IMAGE_SIZE  # noqa: E402
from trainer_module import flops  # noqa: E402
from trainer_module.unet import build_unet  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def measure(name: str, rows: int, repeats: int) -> dict:
  unet_config = sweep.experiment_config(name, train_steps=1).unet
  model = build_unet(unet_config)
  forward = tf.function(lambda images, times, labels: model([images, times, labels]),
                        autograph=False)
  inputs = (tf.random.stateless_normal([rows, IMAGE_SIZE, IMAGE_SIZE, 1], seed=[0, 0]),
            tf.fill([rows], 0.5), tf.zeros([rows], tf.int32))
  forward(*inputs).numpy()  # trace and warm up
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(repeats):
      forward(*inputs).numpy()
    best = min(best, (time.perf_counter() - start) / repeats)
  gflop = flops.forward_flops(model, 1) / 1e9
  return {"name": name, "unet": unet_config.to_dict(), "parameters": model.count_params(),
          "gflop_per_image": gflop, "rows": rows, "ms_per_call": 1000 * best,
          "gflops_achieved": gflop * rows / best}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--only", nargs="+", choices=sorted(sweep.EXPERIMENTS),
                      default=["baseline", "patch2", "patch2_2blocks"])
  parser.add_argument("--results-dir", default=RESULTS_DIR)
  args = parser.parse_args(argv)
  rate = flops.matmul_flops_per_second()
  results = []
  for name in args.only:
    result = measure(name, args.rows, args.repeats)
    result["share_of_matmul_rate"] = result["gflops_achieved"] * 1e9 / rate
    results.append(result)
    print(f"{name}: {result['parameters']:,} params, {result['gflop_per_image']:.3f} GFLOP per "
          f"image, {result['ms_per_call']:.1f} ms per call of {args.rows} rows, "
          f"{result['share_of_matmul_rate']:.0%} of the {rate / 1e9:.0f} GFLOP/s matmul rate",
          flush=True)
  os.makedirs(args.results_dir, exist_ok=True)
  with open(os.path.join(args.results_dir, "forward_cost.json"), "w") as f:
    json.dump({"command": f"python -m benchmarks.forward_cost --rows {args.rows} --repeats "
                          f"{args.repeats} --only {' '.join(args.only)}",
               "machine": machine.describe(), "machine_matmul_gflops": rate / 1e9,
               "results": results}, f, indent=2)


if __name__ == "__main__":
  main()
