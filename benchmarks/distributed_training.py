"""Diffusion training under tf.distribute: images/s with 1 vs 2 replicas, and the all-reduce cost.

  python -m benchmarks.distributed_training --profile cpu --steps 40
Writes benchmarks/results/distributed_training.json. Each setting runs in its own processes
(logical devices and TF_CONFIG must be set before TensorFlow starts): the plain loop
(distribution "none"); "mirrored" over 1 and 2 logical CPU devices; "multi_worker" with 1 and 2
worker processes on localhost. Every setting trains on the same global batch (train.batch_size),
so images/s compare directly. On a machine whose replicas share the same few cores this measures
the overhead of distribution, not a speed-up: two replicas split the same cores.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from benchmarks import common

# Settings measured, in order: (name, distribution, logical CPU devices, worker processes).
SETTINGS = (
    ("none", "none", 1, 1),
    ("mirrored_1_device", "mirrored", 1, 1),
    ("mirrored_2_devices", "mirrored", 2, 1),
    ("multi_worker_1_process", "multi_worker", 1, 1),
    ("multi_worker_2_processes", "multi_worker", 1, 2),
)
WARMUP_STEPS = 3
ALL_REDUCE_REPEATS = 20
_WORKER_TIMEOUT_S = 900


def _measure(profile: str, distribution: str, devices: int, steps: int) -> dict:
  """In a worker process: trains `steps` timed steps (after a traced warm-up) on random global
  batches, then times an all-reduce of the gradients' size across the replicas."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if devices > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
  from core import config as config_lib  # pylint: disable=import-outside-toplevel
  from core.config import IMAGE_SIZE, NUM_CLASSES  # pylint: disable=import-outside-toplevel
  from trainer_module import train  # pylint: disable=import-outside-toplevel
  strategy = train.distribution_strategy(distribution)
  config = config_lib.profile(profile)
  trainer = train.DiffusionTrainer(config, strategy)
  batch_size = config.train.batch_size
  images = tf.random.stateless_uniform([batch_size, IMAGE_SIZE, IMAGE_SIZE, 1], [0, 0], -1.0, 1.0)
  labels = tf.random.stateless_uniform([batch_size], [0, 1], 0, NUM_CLASSES, tf.int32)
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
  start = time.perf_counter()
  for _ in range(WARMUP_STEPS):
    float(trainer.train_step(*next(iterator)))  # as the training loop does: one fetch a step
  warmup_seconds = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    float(trainer.train_step(*next(iterator)))
  seconds = time.perf_counter() - start

  # The communication a step adds: one sum over replicas of tensors shaped like the gradients.
  variables = trainer.model.trainable_variables

  @tf.function(autograph=False)
  def all_reduce():
    def replica_fn():
      context = tf.distribute.get_replica_context()
      return context.all_reduce(tf.distribute.ReduceOp.SUM,
                                [tf.ones_like(v) for v in variables])
    return strategy.run(replica_fn)

  all_reduce()
  start = time.perf_counter()
  for _ in range(ALL_REDUCE_REPEATS):
    result = all_reduce()
  tf.nest.map_structure(lambda t: t.numpy(), strategy.experimental_local_results(result))
  all_reduce_seconds = (time.perf_counter() - start) / ALL_REDUCE_REPEATS
  gradient_bytes = sum(int(v.shape.num_elements()) * v.dtype.size for v in variables)
  return {"replicas": strategy.num_replicas_in_sync, "chief": train.is_chief(strategy),
          "batch_size": batch_size, "steps_timed": steps,
          "warmup_seconds": warmup_seconds, "seconds_per_step": seconds / steps,
          "images_per_second": steps * batch_size / seconds,
          "gradient_megabytes": gradient_bytes / 1e6,
          "all_reduce_ms": 1e3 * all_reduce_seconds,
          "all_reduce_share_of_step": all_reduce_seconds / (seconds / steps)}


def _free_ports(count: int):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def run_setting(profile: str, distribution: str, devices: int, workers: int, steps: int) -> dict:
  """Runs one setting in `workers` fresh processes; returns the chief's measurement (and every
  worker's images/s)."""
  cluster = [f"localhost:{port}" for port in _free_ports(workers)]
  repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as scratch:
    processes = []
    for index in range(workers):
      env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
      env["TF_CPP_MIN_LOG_LEVEL"] = "2"
      if distribution == "multi_worker":
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": cluster},
                                       "task": {"type": "worker", "index": index}})
      out = os.path.join(scratch, f"worker{index}.json")
      processes.append(subprocess.Popen(
          [sys.executable, "-m", "benchmarks.distributed_training", "--worker-out", out,
           "--profile", profile, "--steps", str(steps), "--worker-setting",
           json.dumps([distribution, devices])],
          cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
      for process in processes:
        outputs.append(process.communicate(timeout=_WORKER_TIMEOUT_S)[0])
    finally:
      for process in processes:
        if process.poll() is None:
          process.kill()
    for process, output in zip(processes, outputs):
      if process.returncode != 0:
        raise RuntimeError(f"worker failed ({process.returncode}):\n{output[-3000:]}")
    results = []
    for index in range(workers):
      with open(os.path.join(scratch, f"worker{index}.json")) as f:
        results.append(json.load(f))
  chief = next(result for result in results if result["chief"])
  return {**chief, "distribution": distribution, "logical_devices": devices,
          "worker_processes": workers,
          "worker_images_per_second": [result["images_per_second"] for result in results]}


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = common.argument_parser(__doc__)
  common.add_profile(parser, "whose network, batch size and optimizer to train")
  parser.add_argument("--steps", type=int, default=40, help="training steps timed per setting")
  parser.add_argument("--settings", default=",".join(name for name, *_ in SETTINGS),
                      help="comma-separated subset of: "
                           + ", ".join(name for name, *_ in SETTINGS))
  # Internal: how run_setting starts one worker process of a setting.
  parser.add_argument("--worker-setting", help=argparse.SUPPRESS)
  parser.add_argument("--worker-out", help=argparse.SUPPRESS)
  common.add_results_dir(parser)
  args = parser.parse_args(argv)
  if args.worker_out:
    distribution, devices = json.loads(args.worker_setting)
    result = _measure(args.profile, distribution, devices, args.steps)
    with open(args.worker_out, "w") as f:
      json.dump(result, f)
    return
  wanted = args.settings.split(",")
  load_before = os.getloadavg()
  settings = {}
  for name, distribution, devices, workers in SETTINGS:
    if name in wanted:
      settings[name] = run_setting(args.profile, distribution, devices, workers, args.steps)
      print(f"{name:26s} {settings[name]['images_per_second']:8.1f} images/s "
            f"{1e3 * settings[name]['seconds_per_step']:8.1f} ms/step, all-reduce "
            f"{settings[name]['all_reduce_ms']:.2f} ms", flush=True)
  result = {
      **common.provenance("distributed_training", argv), "profile": args.profile,
      "note": (f"{os.cpu_count()} CPU cores shared by every replica and worker: this measures "
               "what distribution costs (replica split, all-reduce, gRPC between processes), "
               "not a speed-up; more devices or hosts are needed for that."),
      "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
      "settings": settings}
  path = common.write_json(result, args.results_dir, "distributed_training.json")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
