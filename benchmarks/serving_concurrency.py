"""Concurrent requests on one loaded export, as TF Serving sends them: all answered, unchanged.

Does every call succeed, and does a request still get its own images while others run beside it?

  python -m benchmarks.serving_concurrency --model-dir runs/cpu/serving_model --threads 3 \
      --seconds 240

TF Serving runs the requests it receives at the same time on one loaded SavedModel, so the
graph's kernels run concurrently with themselves (a kernel that is not safe to run twice at once
fails or corrupts answers only under such load). Here --threads threads call the model for
--seconds, each with requests from its own seeded generator: `serving_default` with 1 to `max_batch`
labels (0-10), guidance 0 to 3 and 1 to --max-steps steps, and every --denoise-every-th call
`denoise`. Every --probe-every-th call of a thread is instead one of a few fixed probe requests
whose images were computed alone before the threads started; the result records how far the
probes' answers under load were from those (the same graph on the same rows should return the
same images). Writes benchmarks/results/serving_concurrency.json and prints a summary.
"""

import sys
import threading
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf

from benchmarks import common
from core import serving_contract as contract
from core.config import IMAGE_SIZE, NULL_LABEL, NUM_CLASSES
from serving.client import positive_int

RESULT_FILE_NAME = "serving_concurrency.json"
MAX_GUIDANCE = 3.0


def sampling_request(labels, num_steps: int, guidance_scale: float,
                     seed: int) -> Dict[str, tf.Tensor]:
  """`serving_default`'s inputs, with the signature's dtypes."""
  return {contract.LABELS: tf.constant(labels, tf.int32),
          contract.GUIDANCE_SCALE: tf.constant(guidance_scale, tf.float32),
          contract.NUM_STEPS: tf.constant(num_steps, tf.int32),
          contract.SEED: tf.constant(seed, tf.int32)}


def probe_requests(max_batch: int) -> List[Dict[str, tf.Tensor]]:
  """Fixed guided `serving_default` requests: one digit, ten, and the largest batch allowed."""
  return [sampling_request(np.arange(size) % NUM_CLASSES, num_steps=2, guidance_scale=1.5,
                           seed=index)
          for index, size in enumerate([1, min(10, max_batch), max_batch])]


def random_request(rng: np.random.Generator, max_batch: int, max_steps: int):
  """(signature name, inputs) of one random call: digits or the null label, any guidance."""
  size = int(rng.integers(1, max_batch + 1))
  return contract.SERVING_SIGNATURE, sampling_request(
      rng.integers(0, NULL_LABEL + 1, size), guidance_scale=rng.uniform(0.0, MAX_GUIDANCE),
      num_steps=int(rng.integers(1, max_steps + 1)), seed=int(rng.integers(0, 2**31 - 1)))


def denoise_request(rng: np.random.Generator, max_batch: int):
  size = int(rng.integers(1, max_batch + 1))
  noisy = np.clip(rng.uniform(-0.2, 1.2, (size, IMAGE_SIZE, IMAGE_SIZE, 1)), 0.0, 1.0)
  return contract.DENOISE_SIGNATURE, {
      contract.NOISY_IMAGES: tf.constant(noisy, tf.float32),
      contract.NOISE_SIGMA: tf.constant(rng.uniform(0.05, 1.0), tf.float32)}


def run(model_dir: str, threads: int, seconds: float, max_steps: int, denoise_every: int,
        probe_every: int, seed: int = 0) -> dict:
  model_dir = common.resolve_model_dir(model_dir)
  loaded = tf.saved_model.load(model_dir)
  signatures = loaded.signatures
  max_batch = contract.recorded_sampler_config(loaded, model_dir).max_batch
  probes = probe_requests(max_batch)
  serve = signatures[contract.SERVING_SIGNATURE]
  references = [serve(**probe)[contract.IMAGES_OUTPUT].numpy() for probe in probes]
  lock = threading.Lock()
  calls = {contract.SERVING_SIGNATURE: 0, contract.DENOISE_SIGNATURE: 0, "probe": 0}
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
        outputs = (serve if name == "probe" else signatures[name])(**inputs)
        if name == "probe":
          images = outputs[contract.IMAGES_OUTPUT].numpy()
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
  parser = common.argument_parser(__doc__)
  common.add_model_dir(parser)
  parser.add_argument("--threads", type=positive_int, default=3)
  parser.add_argument("--seconds", type=float, default=240.0)
  parser.add_argument("--max-steps", type=positive_int, default=3,
                      help="random requests use 1 to this many steps (short calls, many of them)")
  parser.add_argument("--denoise-every", type=positive_int, default=4)
  parser.add_argument("--probe-every", type=positive_int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  common.add_results_dir(parser)
  args = parser.parse_args(argv)
  result = {**common.provenance("serving_concurrency", argv),
            **run(args.model_dir, args.threads, args.seconds, args.max_steps, args.denoise_every,
                  args.probe_every, args.seed)}
  path = common.write_json(result, args.results_dir, RESULT_FILE_NAME)
  print(summary(result))
  for error in result["errors"][:10]:
    print(f"  {error}")
  print(f"wrote {path}")
  return result


if __name__ == "__main__":
  main()
