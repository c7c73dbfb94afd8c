"""Two exports of a sampler timed in turn on the same requests: which serves faster, by how much.

  python -m benchmarks.exports_ab --model-dirs runs/a/serving_model runs/b/serving_model \
      --digits 10 100 --steps 20 --repeats 8 --guidance 1.6
Each --model-dirs entry is a SavedModel or a serving directory (its highest numeric version).
Both load in one process and answer the same `serving_default` requests: repeat i calls A then
B, the next B then A, so neither always runs second on a warm cache, and the ratio of a pair's
times carries little of the machine's drift from minute to minute (the figure to read is the
median pair ratio; the p50s of separate runs can differ by 20% on a shared 2-core VM). Each cell
also checks that both return the same images (largest difference of `images_float`, count of
differing uint8 pixels) and records the CPUs' steal time. Writes
benchmarks/results/exports_ab.json and prints a markdown table.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Dict, List, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from serving.client import resolve_model_dir  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RESULT_FILE_NAME = "exports_ab.json"


def request(digits: int, num_steps: int, guidance_scale: float, seed: int = 0) -> Dict[str, tf.Tensor]:
  """A `serving_default` request for `digits` labels cycling through 0-9."""
  return {"labels": tf.constant(np.arange(digits) % 10, tf.int32),
          "guidance_scale": tf.constant(guidance_scale, tf.float32),
          "num_steps": tf.constant(num_steps, tf.int32), "seed": tf.constant(seed, tf.int32)}


def time_in_turn(signatures: Sequence, inputs: Dict[str, tf.Tensor], repeats: int) -> dict:
  """Seconds per call of each signature, calling them in turn (the order flips every repeat)."""
  seconds: List[List[float]] = [[] for _ in signatures]
  intervals = []
  for repeat in range(repeats):
    order = range(len(signatures)) if repeat % 2 == 0 else reversed(range(len(signatures)))
    for index in order:
      before = machine.cpu_ticks()
      start = time.perf_counter()
      signatures[index](**inputs)["images"].numpy()
      seconds[index].append(time.perf_counter() - start)
      intervals.append((before, machine.cpu_ticks()))
  return {"seconds": seconds, "cpu_steal_share": machine.steal_share(intervals)}


def compare(model_dirs: Sequence[str], digits: Sequence[int], steps: Sequence[int], repeats: int,
            guidance_scale: float) -> dict:
  if len(model_dirs) != 2:
    raise ValueError(f"compare takes two exports (A and B), got {len(model_dirs)}")
  model_dirs = [resolve_model_dir(path) for path in model_dirs]
  signatures = [tf.saved_model.load(path).signatures["serving_default"] for path in model_dirs]
  rows = []
  for batch_size in digits:
    for num_steps in steps:
      inputs = request(batch_size, num_steps, guidance_scale)
      first = [signature(**inputs) for signature in signatures]  # warm-up, and the same images?
      timed = time_in_turn(signatures, inputs, repeats)
      a_seconds, b_seconds = timed["seconds"]
      pair_ratios = [a / b for a, b in zip(a_seconds, b_seconds)]
      rows.append({
          "digits": batch_size, "num_steps": num_steps,
          "a_p50_s": float(np.median(a_seconds)), "b_p50_s": float(np.median(b_seconds)),
          "a_seconds": a_seconds, "b_seconds": b_seconds,
          # Above 1: B is faster.
          "pair_ratios_a_over_b": pair_ratios,
          "median_pair_ratio_a_over_b": float(np.median(pair_ratios)),
          "max_abs_difference_images_float": float(tf.reduce_max(tf.abs(
              first[0]["images_float"] - first[1]["images_float"]))),
          "differing_uint8_pixels": int(tf.math.count_nonzero(
              first[0]["images"] != first[1]["images"])),
          "cpu_steal_share": timed["cpu_steal_share"],
      })
  return {"model_dirs": {"a": model_dirs[0], "b": model_dirs[1]}, "guidance_scale": guidance_scale,
          "repeats": repeats, "rows": rows}


def markdown_table(result: dict) -> str:
  lines = ["| digits | steps | A p50 (s) | B p50 (s) | median pair ratio A/B | pair ratios | "
           "max image difference | differing pixels | CPU steal |",
           "|---|---|---|---|---|---|---|---|---|"]
  for row in result["rows"]:
    lines.append(
        f"| {row['digits']} | {row['num_steps']} | {row['a_p50_s']:.3f} | {row['b_p50_s']:.3f} | "
        f"{row['median_pair_ratio_a_over_b']:.2f}x | "
        f"{min(row['pair_ratios_a_over_b']):.2f}-{max(row['pair_ratios_a_over_b']):.2f} | "
        f"{row['max_abs_difference_images_float']:.1e} | {row['differing_uint8_pixels']} | "
        f"{machine.percent(row['cpu_steal_share'])} |")
  return "\n".join(lines)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model-dirs", nargs=2, required=True, metavar=("A", "B"),
                      help="two SavedModels or serving dirs (their highest numeric version)")
  parser.add_argument("--digits", type=int, nargs="+", default=[10, 100])
  parser.add_argument("--steps", type=int, nargs="+", default=[20])
  parser.add_argument("--repeats", type=int, default=8)
  parser.add_argument("--guidance", type=float, default=config_lib.DEFAULT_GUIDANCE_SCALE)
  parser.add_argument("--results-dir", default=RESULTS_DIR)
  args = parser.parse_args(argv)
  result = {"command": shlex.join(["python", "-m", "benchmarks.exports_ab", *argv]),
            "machine": machine.describe(),
            **compare(args.model_dirs, args.digits, args.steps, args.repeats, args.guidance)}
  os.makedirs(args.results_dir, exist_ok=True)
  path = os.path.join(args.results_dir, RESULT_FILE_NAME)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"A = {result['model_dirs']['a']}\nB = {result['model_dirs']['b']}\n")
  print(markdown_table(result))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
