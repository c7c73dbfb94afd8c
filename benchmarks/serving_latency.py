"""Serving latency of the exported in-graph sampler vs a Python-loop sampler, per (batch, steps).

  python -m benchmarks.serving_latency --model-dir runs/serving_model --profile cpu \
      --batch-sizes 1 10 100 --steps 10 20 50 --repeats 5
--model-dir is a SavedModel, a TFX Model artifact or a serving directory (its highest numeric
version is used). The exported sampler runs in a fresh process that imports only TensorFlow, as a
server would load it, and its calls alternate with the baseline's, so both see the machine at the
same speed.
The baseline is the usual tutorial loop: a Python `for` over steps, each an eager call of the same
U-Net (rebuilt from the UNetConfig and weights the SavedModel records), with --profile's noise
schedule and the math of the sampler and guidance interval the model was exported with (DDIM or
DPM-Solver++(2M)). Its timing leaves out drawing the initial noise, which only flatters the
baseline.
--max-rows-per-call N (or none) times the same weights re-exported with another chunk limit
(SamplerConfig.max_rows_per_call). Each cell also records the CPUs' steal time (/proc/stat) while
it ran. Writes benchmarks/results/serving_latency.json and prints a markdown table.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from benchmarks import common
from benchmarks import machine
from core import config as config_lib
from core import serving_contract
from core.config import NULL_LABEL, NUM_CLASSES
from serving import reexport
from trainer_module import export
from trainer_module import flops
from trainer_module import samplers
from trainer_module import schedule as schedule_lib
from trainer_module import transform

RESULT_FILE_NAME = "serving_latency.json"
_PROJECT_PACKAGES = ("core", "pipeline", "components", "trainer_module", "serving", "benchmarks",
                     "tests")
# Targets printed beside the figures (not asserted).
TARGET_BATCH, TARGET_STEPS, TARGET_P50_S = 10, 20, 1.0
TARGET_SPEEDUP = 2.0
LOOP_SAMPLERS = ("ddim", "dpmpp_2m")

# The child: TensorFlow only, so the numbers are what a server that never saw this project gets.
# It stays up and answers one timing request per stdin line, so the parent can alternate its calls
# with the Python loop's: a shared machine's speed drifts over minutes, and a grid timed one side
# after the other would put that drift into the speed-up.
_REPLY_MARK = "@@timing "
_FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port  # oneDNN on? (TF_ENABLE_ONEDNN_OPTS)
    guidance_scale = float(sys.argv[2])
    start = time.perf_counter()
    loaded = tf.saved_model.load(sys.argv[1])
    load_seconds = time.perf_counter() - start
    serve = loaded.signatures["serving_default"]

    def call(batch_size, num_steps, seed):
      start = time.perf_counter()
      outputs = serve(labels=tf.constant([i % 10 for i in range(batch_size)], tf.int32),
                      guidance_scale=tf.constant(guidance_scale, tf.float32),
                      num_steps=tf.constant(num_steps, tf.int32), seed=tf.constant(seed, tf.int32))
      outputs["images"].numpy()
      return time.perf_counter() - start

    def reply(payload):
      print(REPLY_MARK + json.dumps(payload), flush=True)

    first_call_seconds = call(1, 1, 0)
    reply({"tensorflow": tf.__version__, "onednn": bool(_pywrap_util_port.IsMklEnabled()),
           "load_seconds": load_seconds, "first_call_seconds": first_call_seconds})
    for line in sys.stdin:
      request = json.loads(line)
      reply({"seconds": call(request["batch_size"], request["num_steps"], request["seed"])})
    reply({"project_modules": sorted(m for m in sys.modules
                                     if m.split(".")[0] in PROJECT_PACKAGES)})
""").replace("PROJECT_PACKAGES", repr(_PROJECT_PACKAGES)).replace("REPLY_MARK", repr(_REPLY_MARK))


class FreshProcessSampler:
  """serving_default in a new interpreter that imports only TensorFlow, timed one call at a time.

  `info` holds the child's TensorFlow version, oneDNN state, load and first-call seconds; after
  `close()` it also lists the project modules the child imported (none, or the timing is void).
  """

  def __init__(self, model_dir: str, guidance_scale: float):
    model_dir = os.path.abspath(model_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    self._stderr = tempfile.TemporaryFile(mode="w+")  # a file, so TF's logging never blocks it
    self._process = subprocess.Popen(
        [sys.executable, "-c", _FRESH_PROCESS_SCRIPT, model_dir, repr(guidance_scale)],
        cwd=os.path.dirname(model_dir), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=self._stderr, text=True)
    self.info = self._read_reply()

  def _read_reply(self) -> dict:
    for line in self._process.stdout:
      if line.startswith(_REPLY_MARK):
        return json.loads(line[len(_REPLY_MARK):])
    self._process.wait()
    self._stderr.seek(0)
    raise RuntimeError(f"fresh process failed ({self._process.returncode}):\n"
                       f"{self._stderr.read()[-3000:]}")

  def call(self, batch_size: int, num_steps: int, seed: int) -> float:
    """Seconds for one serving_default request, measured inside the child."""
    self._process.stdin.write(json.dumps(
        {"batch_size": batch_size, "num_steps": num_steps, "seed": seed}) + "\n")
    self._process.stdin.flush()
    return self._read_reply()["seconds"]

  def close(self) -> dict:
    if self._process.poll() is None:
      self._process.stdin.close()
      self.info.update(self._read_reply())
      self._process.wait()
    self._stderr.close()
    return self.info

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *unused):
    if exc_type is not None:
      self._process.kill()
      self._process.wait()
    self.close()


class PythonLoopSampler:
  """The tutorial sampler: one eager U-Net call per step from a Python loop, with classifier-free
  guidance. Same math as samplers.sample for the deterministic samplers ("ddim", "dpmpp_2m"), so
  it is compared with the exported model on the same work."""

  def __init__(self, model, diffusion: config_lib.DiffusionConfig,
               sampler: config_lib.SamplerConfig):
    if sampler.sampler not in LOOP_SAMPLERS:
      raise ValueError(f"The Python loop runs {LOOP_SAMPLERS}, not {sampler.sampler!r}")
    self.model = model
    self._schedule = export.schedule_from_config(diffusion)
    self._prediction = diffusion.prediction
    self._sampler = sampler

  def sample(self, noise: tf.Tensor, labels, num_steps: int, guidance_scale: float) -> np.ndarray:
    """Images [N, 28, 28, 1] in [0, 1] from model-space `noise` [N, 28, 28, 1]."""
    labels = tf.constant(labels, tf.int32)
    guidance_scale = tf.constant(guidance_scale, tf.float32)
    batch_size = noise.shape[0]
    noisy_images = noise
    pred_images = tf.zeros_like(noise)
    log_snr_step = tf.constant(0.0)
    for step in range(num_steps):
      times, next_times = samplers.step_times(step, num_steps)
      signal_rates, noise_rates = self._schedule.rates(times)
      next_signal_rates, next_noise_rates = self._schedule.rates(next_times)
      scale = samplers.step_guidance_scale(guidance_scale, signal_rates, noise_rates,
                                           self._sampler.guidance_min_sigma,
                                           self._sampler.guidance_max_sigma)
      predictions = samplers.guided_prediction(
          self.model, noisy_images, tf.fill([batch_size], times), labels, scale,
          NULL_LABEL)
      previous_pred_images = pred_images
      pred_images, _ = schedule_lib.split_prediction(predictions, noisy_images, signal_rates,
                                                     noise_rates, self._prediction)
      pred_images = tf.clip_by_value(pred_images, -1.0, 1.0)
      if self._sampler.sampler == "dpmpp_2m":
        noisy_images, log_snr_step = samplers.dpmpp_2m_update(
            tf.constant(step), tf.constant(num_steps), noisy_images, pred_images,
            previous_pred_images, log_snr_step, signal_rates, noise_rates, next_signal_rates,
            next_noise_rates)
      else:
        pred_noises = (noisy_images - signal_rates * pred_images) / noise_rates
        noisy_images = next_signal_rates * pred_images + next_noise_rates * pred_noises
    return transform.to_unit_range(pred_images).numpy()

  def generate(self, labels, num_steps: int, guidance_scale: float, seed: int) -> np.ndarray:
    """The exported signature's contract: the same initial noise for the same (seed, index)."""
    noise = samplers.initial_noise(tf.constant(seed, tf.int32), len(labels))
    return self.sample(noise, labels, num_steps, guidance_scale)


def _summary(seconds: Sequence[float], batch_size: int) -> dict:
  p50 = float(np.percentile(seconds, 50))
  return {"p50_s": p50, "p95_s": float(np.percentile(seconds, 95)),
          "mean_s": float(np.mean(seconds)), "images_per_second": batch_size / p50,
          "seconds": [float(s) for s in seconds]}


def time_interleaved(fresh: FreshProcessSampler, loop: PythonLoopSampler,
                     grid: Sequence[Sequence[int]], repeats: int,
                     guidance_scale: float) -> List[dict]:
  """Times both samplers on each (batch, steps) cell, their calls alternating.

  Repeat r of each side uses seed r (the Python loop's noise is drawn before its clock starts);
  one untimed call of each side warms up the cell's shapes. The side that goes first alternates
  too, so a drift of the machine's speed within a pair favours neither.
  """
  runs = []
  for batch_size, num_steps in grid:
    labels = np.arange(batch_size) % NUM_CLASSES

    def in_graph(seed):
      return fresh.call(batch_size, num_steps, seed)

    def python_loop(seed):
      noise = samplers.initial_noise(tf.constant(seed, tf.int32), batch_size)
      start = time.perf_counter()
      loop.sample(noise, labels, num_steps, guidance_scale)
      return time.perf_counter() - start

    sides = {"in_graph": in_graph, "python_loop": python_loop}
    for time_call in sides.values():
      time_call(0)
    seconds = {name: [] for name in sides}
    pair_ticks = []  # per repeat, the (before, after) CPU ticks of both its calls
    for repeat in range(1, repeats + 1):
      pair_ticks.append([])
      for name in (sides if repeat % 2 else reversed(sides)):
        before = machine.cpu_ticks()
        seconds[name].append(sides[name](repeat))
        pair_ticks[-1].append((before, machine.cpu_ticks()))
    runs.append({"batch_size": batch_size, "num_steps": num_steps,
                 **{f"{name}_seconds": seconds[name] for name in sides},
                 "pair_steal_shares": [machine.steal_share(ticks) for ticks in pair_ticks],
                 "steal_share": machine.steal_share([t for ticks in pair_ticks for t in ticks])})
  return runs


def measure(model_dir: str, config: config_lib.PipelineConfig, batch_sizes: Sequence[int],
            steps: Sequence[int], repeats: int, guidance_scale: Optional[float] = None) -> dict:
  """Times every (batch, steps) cell; guidance_scale defaults to the one the model records."""
  model_dir = common.resolve_model_dir(model_dir)
  grid = [(b, s) for b in batch_sizes for s in steps]
  loaded = tf.saved_model.load(model_dir)
  model, unet_config = export.load_unet(loaded)
  # The Python loop does the math of the sampler and guidance interval the model was exported
  # with, on the network in the dtype it computes in.
  sampler = serving_contract.recorded_sampler_config(loaded, model_dir)
  if guidance_scale is None:
    guidance_scale = sampler.guidance_scale
  loop_network = export.network_for_serving(model, sampler.compute_dtype, unet_config)
  loop_sampler = PythonLoopSampler(loop_network, config.diffusion, sampler)
  with FreshProcessSampler(model_dir, guidance_scale) as fresh_sampler:
    runs = time_interleaved(fresh_sampler, loop_sampler, grid, repeats, guidance_scale)
  fresh = fresh_sampler.info
  # A guided step runs the doubled batch, one at scale 0 or 1 or outside the guidance interval.
  forward_flops = flops.forward_flops(model, 1)
  machine_rate = flops.matmul_flops_per_second()
  rows = []
  for run in runs:
    batch_size, num_steps = run["batch_size"], run["num_steps"]
    in_graph = _summary(run["in_graph_seconds"], batch_size)
    python_loop = _summary(run["python_loop_seconds"], batch_size)
    # Each repeat's two calls ran back to back, so their ratio carries little of the drift.
    pair_speedups = [loop_s / graph_s for graph_s, loop_s in
                     zip(run["in_graph_seconds"], run["python_loop_seconds"])]
    rows_per_sample = samplers.network_rows_per_sample(
        num_steps, guidance_scale, export.schedule_from_config(config.diffusion),
        sampler.guidance_min_sigma, sampler.guidance_max_sigma)
    achieved = in_graph["images_per_second"] * rows_per_sample * forward_flops
    rows.append({
        "batch_size": batch_size, "num_steps": num_steps, "network_rows_per_sample": rows_per_sample,
        "in_graph": in_graph,
        "python_loop": python_loop, "speedup_p50": python_loop["p50_s"] / in_graph["p50_s"],
        "pair_speedups": pair_speedups,
        # The hypervisor's share of the CPUs while the cell ran (cpu steal): well above zero,
        # other guests held the CPUs for part of the cell's timings.
        "cpu_steal_share": run["steal_share"], "pair_cpu_steal_shares": run["pair_steal_shares"],
        "in_graph_gflops": achieved / 1e9, "in_graph_share_of_matmul_rate": achieved / machine_rate,
    })
  target_row = next((r for r in rows if (r["batch_size"], r["num_steps"]) ==
                     (TARGET_BATCH, TARGET_STEPS)), None)
  min_speedup = min(r["speedup_p50"] for r in rows)
  return {
      "model_dir": model_dir, "profile": config.profile, "guidance_scale": guidance_scale,
      "repeats": repeats, "parameters": model.count_params(),
      "forward_gflop_per_image": forward_flops / 1e9,
      "sampler": sampler.sampler,
      "compute_dtype": sampler.compute_dtype,
      "guidance_sigma_interval": [sampler.guidance_min_sigma, sampler.guidance_max_sigma],
      "machine_matmul_gflops": machine_rate / 1e9,
      "fresh_process": {key: fresh[key] for key in
                        ("tensorflow", "onednn", "load_seconds", "first_call_seconds",
                         "project_modules")},
      "rows": rows,
      "targets": {
          "p50_10_digits_20_steps_under_1s": {
              "target_s": TARGET_P50_S,
              "observed_s": target_row["in_graph"]["p50_s"] if target_row else None,
              "met": target_row["in_graph"]["p50_s"] < TARGET_P50_S if target_row else None},
          "in_graph_speedup_at_least_2x": {
              "target": TARGET_SPEEDUP, "observed_min": min_speedup,
              "met": min_speedup >= TARGET_SPEEDUP},
      },
  }


def markdown_table(result: dict) -> str:
  lines = ["| batch | steps | in-graph p50 (s) | p95 (s) | images/s | Python loop p50 (s) "
           "| p95 (s) | images/s | speed-up | paired speed-ups | in-graph GFLOP/s "
           "| share of matmul rate | CPU steal |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in result["rows"]:
    graph, loop = row["in_graph"], row["python_loop"]
    lines.append(
        f"| {row['batch_size']} | {row['num_steps']} | {graph['p50_s']:.3f} | {graph['p95_s']:.3f} "
        f"| {graph['images_per_second']:.1f} | {loop['p50_s']:.3f} | {loop['p95_s']:.3f} "
        f"| {loop['images_per_second']:.1f} | {row['speedup_p50']:.2f}x "
        f"| {min(row['pair_speedups']):.2f}-{max(row['pair_speedups']):.2f}x "
        f"| {row['in_graph_gflops']:.2f} | {row['in_graph_share_of_matmul_rate']:.1%} "
        f"| {machine.percent(row['cpu_steal_share'])} |")
  return "\n".join(lines)


def _met(value: Optional[bool]) -> str:
  return "not measured" if value is None else ("met" if value else "NOT met")


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = common.argument_parser(__doc__)
  common.add_model_dir(parser)
  common.add_profile(parser, "the profile the model was trained with (its noise schedule and "
                             "prediction, which the Python loop needs)")
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 10, 100])
  parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--guidance", type=float, default=None,
                      help="guidance scale of every request (default: the model's own default)")
  parser.add_argument("--max-rows-per-call", type=reexport.rows_limit, default=None,
                      metavar="ROWS",
                      help="re-export the model's weights with this SamplerConfig."
                           "max_rows_per_call first (a number, or 'none' for one call per step)")
  common.add_results_dir(parser)
  args = parser.parse_args(argv)
  config = config_lib.profile(args.profile)
  changes = ({} if args.max_rows_per_call is None
             else {"max_rows_per_call": args.max_rows_per_call or None})
  with common.reexported(args.model_dir, config, changes) as (model_dir, named):
    result = {**common.provenance("serving_latency", argv),
              **measure(model_dir, config, args.batch_sizes, args.steps, args.repeats,
                        args.guidance)}
  if named:
    result["model_dir"] = named
  path = common.write_json(result, args.results_dir, RESULT_FILE_NAME)
  print(markdown_table(result))
  print()
  fresh = result["fresh_process"]
  print(f"model {result['model_dir']}: {result['parameters']} parameters, "
        f"{result['forward_gflop_per_image']:.4g} GFLOP per network row, machine matmul "
        f"{result['machine_matmul_gflops']:.4g} GFLOP/s; fresh process (oneDNN "
        f"{'on' if fresh['onednn'] else 'off'}): load "
        f"{fresh['load_seconds']:.2f} s, first call {fresh['first_call_seconds']:.2f} s")
  latency, speedup = (result["targets"]["p50_10_digits_20_steps_under_1s"],
                      result["targets"]["in_graph_speedup_at_least_2x"])
  observed = "n/a" if latency["observed_s"] is None else f"{latency['observed_s']:.3f} s"
  print(f"target: {TARGET_BATCH} digits at {TARGET_STEPS} steps p50 < {TARGET_P50_S:g} s: "
        f"{observed} ({_met(latency['met'])})")
  print(f"target: in-graph >= {TARGET_SPEEDUP:g}x faster than the Python loop: lowest "
        f"{speedup['observed_min']:.2f}x ({_met(speedup['met'])})")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
