"""Concurrent requests on one loaded export, as TF Serving sends them: does every call succeed,
and does a request still get its own images while others run beside it.

  python -m benchmarks.serving_concurrency --model-dir runs/cpu/serving_model --threads 3 \
      --seconds 240

TF Serving runs the requests it receives at the same time on one loaded SavedModel, so the
graph's kernels run concurrently with themselves (a oneDNN convolution that was not safe to run
twice at once crashed session 10's suite). Here --threads threads call the model for --seconds,
each with requests from its own seeded generator: `serving_default` with 1 to `max_batch`
labels (0-10), guidance 0 to 3 and 1 to --max-steps steps, and every --denoise-every-th call
`denoise`. Every --probe-every-th call of a thread is instead one of a few fixed probe requests
whose images were computed alone before the threads started; the result records how far the
probes' answers under load were from those (the same graph on the same rows should return the
same images). Writes benchmarks/results/serving_concurrency.json and prints a summary.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Dict, List  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import exports_ab  # noqa: E402
from benchmarks import machine  # noqa: E402
from pipeline.config import IMAGE_SIZE  # noqa: E402
from serving.client import positive_int, resolve_model_dir  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RESULT_FILE_NAME = "serving_concurrency.json"
MAX_GUIDANCE = 3.0


def probe_requests(max_batch: int) -> List[Dict[str, tf.Tensor]]:
  """Fixed guided `serving_default` requests: one digit, ten, and the largest batch allowed."""
  return [exports_ab.request(size, num_steps=2, guidance_scale=1.5, seed=index)
          for index, size in enumerate([1, min(10, max_batch), max_batch])]


def random_request(rng: np.random.Generator, max_batch: int, max_steps: int):
  """(signature name, inputs) of one random call."""
  size = int(rng.integers(1, max_batch + 1))
  return "serving_default", {
      "labels": tf.constant(rng.integers(0, 11, size), tf.int32),
      "guidance_scale": tf.constant(rng.uniform(0.0, MAX_GUIDANCE), tf.float32),
      "num_steps": tf.constant(int(rng.integers(1, max_steps + 1)), tf.int32),
      "seed": tf.constant(int(rng.integers(0, 2**31 - 1)), tf.int32)}


def denoise_request(rng: np.random.Generator, max_batch: int):
  size = int(rng.integers(1, max_batch + 1))
  return "denoise", {
      "noisy_images": tf.constant(np.clip(rng.uniform(-0.2, 1.2, (size, IMAGE_SIZE, IMAGE_SIZE, 1)),
                                          0.0, 1.0), tf.float32),
      "noise_sigma": tf.constant(rng.uniform(0.05, 1.0), tf.float32)}


def run(model_dir: str, threads: int, seconds: float, max_steps: int, denoise_every: int,
        probe_every: int, seed: int = 0) -> dict:
  model_dir = resolve_model_dir(model_dir)
  loaded = tf.saved_model.load(model_dir)
  signatures = loaded.signatures
  max_batch = int(loaded.max_batch.numpy())
  probes = probe_requests(max_batch)
  references = [signatures["serving_default"](**probe)["images"].numpy() for probe in probes]
  lock = threading.Lock()
  calls = {"serving_default": 0, "denoise": 0, "probe": 0}
  errors: List[str] = []
  probe_differences: List[Dict[str, float]] = []
  deadline = time.perf_counter() + seconds

  def worker(index: int) -> None:
    rng = np.random.default_rng([seed, index])
    call = 0
    while time.perf_counter() < deadline:
      call += 1
      if call % probe_every == 0:
        probe_index = int(rng.integers(0, len(probes)))
        name, inputs = "probe", probes[probe_index]
      elif call % denoise_every == 0:
        name, inputs = denoise_request(rng, max_batch)
      else:
        name, inputs = random_request(rng, max_batch, max_steps)
      try:
        outputs = signatures["serving_default" if name == "probe" else name](**inputs)
        if name == "probe":
          images = outputs["images"].numpy()
          reference = references[probe_index]
          difference = {"probe": probe_index,
                        "max_abs_uint8": int(np.abs(images.astype(np.int16)
                                                    - reference.astype(np.int16)).max()),
                        "differing_pixels": int(np.count_nonzero(images != reference))}
      except Exception as error:  # noqa: BLE001  (every failure is a finding, recorded)
        with lock:
          errors.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
        continue
      with lock:
        calls[name] += 1
        if name == "probe":
          probe_differences.append(difference)

  started = time.perf_counter()
  workers = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
  for thread in workers:
    thread.start()
  for thread in workers:
    thread.join()
  return {
      "model_dir": model_dir, "threads": threads, "seconds": seconds,
      "elapsed_s": time.perf_counter() - started, "max_steps": max_steps, "max_batch": max_batch,
      "calls": calls, "errors": errors, "probe_calls": len(probe_differences),
      "probes_differing": sum(1 for d in probe_differences if d["differing_pixels"]),
      "probe_max_abs_uint8": max((d["max_abs_uint8"] for d in probe_differences), default=0),
      "probe_differences": probe_differences,
  }


def summary(result: dict) -> str:
  calls = result["calls"]
  return (f"{result['threads']} threads for {result['elapsed_s']:.0f} s: "
          f"{sum(calls.values())} calls answered ({calls['serving_default']} serving_default, "
          f"{calls['denoise']} denoise, {calls['probe']} probes), {len(result['errors'])} failed; "
          f"probes differing from their answer alone: {result['probes_differing']} of "
          f"{result['probe_calls']} (largest uint8 difference {result['probe_max_abs_uint8']})")


def main(argv=None) -> dict:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model-dir", required=True,
                      help="SavedModel, or serving dir (its highest numeric version)")
  parser.add_argument("--threads", type=positive_int, default=3)
  parser.add_argument("--seconds", type=float, default=240.0)
  parser.add_argument("--max-steps", type=positive_int, default=3,
                      help="random requests use 1 to this many steps (short calls, many of them)")
  parser.add_argument("--denoise-every", type=positive_int, default=4)
  parser.add_argument("--probe-every", type=positive_int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--results-dir", default=RESULTS_DIR)
  args = parser.parse_args(argv)
  result = {"command": shlex.join(["python", "-m", "benchmarks.serving_concurrency", *argv]),
            "machine": machine.describe(),
            **run(args.model_dir, args.threads, args.seconds, args.max_steps, args.denoise_every,
                  args.probe_every, args.seed)}
  os.makedirs(args.results_dir, exist_ok=True)
  path = os.path.join(args.results_dir, RESULT_FILE_NAME)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(summary(result))
  for error in result["errors"][:10]:
    print(f"  {error}")
  print(f"wrote {path}")
  return result


if __name__ == "__main__":
  main()
