"""Warm against cold retraining: what a new span costs when the Trainer continues the blessed model.

  python -m benchmarks.warm_start --profile cpu --work-dir runs/warm_start [--scale 0.25]

MNIST's training images become 6 spans. Spans 1-4 are ingested (ExampleGen and StatisticsGen of
the pipeline, one run per span, as earlier scheduled runs would have left them), a cold run on
span 5 trains on the window 1-5 and gives the blessed model; span 6 arrives; the same pipeline root then retrains on the window 2-6 twice: warm (from that model,
train.warm_start_steps) and cold (--cold-start, train.train_steps). Reported for both: the
diffusion Trainer's wall time and the Evaluator's metrics (PSNR, class agreement, Frechet ratio).
`--scale` multiplies both step counts (1 = the profile's own) to measure the same comparison in
less time. Writes benchmarks/results/warm_start_<profile>.json.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict

from benchmarks import common
from core import config as config_lib
from pipeline import retrain
from pipeline import spans

NUM_SPANS = 6


def _trainer_seconds(config: config_lib.PipelineConfig) -> float:
  """The training wall time of the diffusion Trainer's latest execution."""
  model_runs = os.path.join(config.pipeline_root, "diffusion_trainer", "model_run")
  latest = max(os.listdir(model_runs), key=int)
  with open(os.path.join(model_runs, latest, "training_summary.json")) as f:
    return json.load(f)["wall_seconds"]


def run(config: config_lib.PipelineConfig, work_dir: str) -> Dict[str, Any]:
  data_root = os.path.join(work_dir, "data")
  held_back = os.path.join(work_dir, "held_back")
  if not os.path.isdir(data_root):
    spans.split(config.data.data_dir, held_back, NUM_SPANS)
    os.makedirs(data_root)
    for span in range(1, NUM_SPANS):
      os.rename(os.path.join(held_back, f"span-{span}"), os.path.join(data_root, f"span-{span}"))
  config = dataclasses.replace(
      config, data=dataclasses.replace(config.data, data_dir=data_root),
      pipeline_root=os.path.join(work_dir, "pipeline_root"),
      serving_dir=os.path.join(work_dir, "serving_model"))
  runs = {}
  started = time.time()
  for span in range(1, NUM_SPANS - 1):
    spanned = dataclasses.replace(config, data=dataclasses.replace(config.data, span=span))
    runs[f"ingest_{span}"] = retrain.retrain(spanned, ingest_only=True)
  runs["cold_1_to_5"] = retrain.retrain(config)
  runs["cold_1_to_5"]["trainer_seconds"] = _trainer_seconds(config)
  last = os.path.join(held_back, f"span-{NUM_SPANS}")
  if os.path.isdir(last):
    os.rename(last, os.path.join(data_root, f"span-{NUM_SPANS}"))
  runs["warm_2_to_6"] = retrain.retrain(config)
  runs["warm_2_to_6"]["trainer_seconds"] = _trainer_seconds(config)
  cold = dataclasses.replace(config, train=dataclasses.replace(config.train, warm_start=False))
  runs["cold_2_to_6"] = retrain.retrain(cold)
  runs["cold_2_to_6"]["trainer_seconds"] = _trainer_seconds(config)
  warm, cold_run = runs["warm_2_to_6"], runs["cold_2_to_6"]
  comparison = {
      "trainer_time_ratio": warm["trainer_seconds"] / cold_run["trainer_seconds"],
      "agreement_points_difference": 100 * (warm["metrics"]["class_agreement"]
                                            - cold_run["metrics"]["class_agreement"]),
      "psnr_db_difference": warm["metrics"]["psnr"] - cold_run["metrics"]["psnr"],
  }
  # Paths as the command gave them (relative to where it ran), not this machine's.
  runs = json.loads(json.dumps(runs, default=str).replace(os.getcwd() + os.sep, ""))
  return {"runs": runs, "warm_vs_cold": comparison, "wall_seconds": time.time() - started}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = common.argument_parser(__doc__)
  common.add_profile(parser, "the profile whose network and recipe are compared")
  parser.add_argument("--work-dir", required=True,
                      help="an empty folder for the spans, pipeline root and serving dir")
  parser.add_argument("--scale", type=float, default=1.0,
                      help="multiplies train_steps and warm_start_steps (default 1)")
  common.add_results_dir(parser)
  args = parser.parse_args(argv)
  config = config_lib.profile(args.profile)
  train = config.train
  config = dataclasses.replace(config, train=dataclasses.replace(
      train, train_steps=max(1, round(train.train_steps * args.scale)),
      warm_start_steps=max(1, round(train.warm_start_steps * args.scale))))
  result = {**common.provenance("warm_start", argv), "profile": args.profile,
            "train_steps": config.train.train_steps,
            "warm_start_steps": config.train.warm_start_steps,
            **run(config, os.path.abspath(args.work_dir))}
  path = common.write_json(result, args.results_dir, f"warm_start_{args.profile}.json")
  comparison = result["warm_vs_cold"]
  print(f"warm/cold Trainer time {comparison['trainer_time_ratio']:.2f}, agreement "
        f"{comparison['agreement_points_difference']:+.2f} points, PSNR "
        f"{comparison['psnr_db_difference']:+.3f} dB; wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
