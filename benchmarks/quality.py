"""Sample quality of an exported model per (steps, guidance), by the evaluator's protocol.

  python -m benchmarks.quality --model-dir runs/serving_model \
      --classifier-dir <Trainer classifier model uri> --examples-dir <ExampleGen Examples uri> \
      --samples-per-class 100 --steps 5 10 20 50 --guidance 0 1 1.5 3
  (or --combos 10:1.5 20:1.5 50:1.5 20:1 for chosen (steps, guidance) pairs only;
   --sampler dpmpp_2m re-exports the same weights with another sampler first)
Uses components/diffusion_evaluator/evaluation.py, so every number is computed as the
DiffusionEvaluator computes it: the reference-protocol denoising metrics (once: they depend on
neither steps nor guidance), then per (steps, guidance) class agreement, Frechet distance and KID
against the real-vs-real floor, and the wall time. The sampler (ddim / dpmpp_2m / ancestral) is
fixed at export and saved in the SavedModel; it is reported and is the default --name, so runs of
several samplers land side by side.
Writes benchmarks/results/quality_<name>.json, quality_<name>.md and quality_<name>/*.png (one
sample grid per combination: a row per digit).
"""

import argparse
import dataclasses
import itertools
import math
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from benchmarks import common
from components.diffusion_evaluator import evaluation
from components.diffusion_evaluator import metrics as metrics_lib
from components.diffusion_evaluator import report
from core import config as config_lib
from core.config import NUM_CLASSES, EvalConfig
from trainer_module import samplers
from trainer_module import unet


def _grid_name(num_steps: int, guidance_scale: float) -> str:
  return f"steps{num_steps}_guidance{guidance_scale:g}.png"


def parse_combo(text: str) -> Tuple[int, float]:
  """"20:1.5" -> (20, 1.5): a step count and a guidance scale."""
  try:
    steps, guidance = text.split(":")
    return int(steps), float(guidance)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected STEPS:GUIDANCE such as 20:1.5, got {text!r}")


def measure(model_dir: str, classifier_dir: str, examples_dir: str, config: EvalConfig,
            combos: Sequence[Tuple[int, float]], results_dir: str,
            name: Optional[str] = None) -> Dict[str, Any]:
  """All metrics for every (steps, guidance); writes a sample grid per combination to
  <results_dir>/quality_<name>/ (name defaults to the exported sampler)."""
  start = time.perf_counter()
  model_dir = common.resolve_model_dir(model_dir)
  classifier_dir = common.resolve_model_dir(classifier_dir)
  judge = evaluation.Judge(classifier_dir, config.batch_size)
  num_samples = NUM_CLASSES * config.samples_per_class
  data_timings: Dict[str, float] = {}
  with evaluation.timed("reading data and the real-vs-real floor", data_timings, "real_data"):
    eval_images, eval_labels = evaluation.read_split_dir(os.path.join(examples_dir, "Split-eval"))
    train_images, _ = evaluation.read_split_dir(os.path.join(examples_dir, "Split-train"),
                                                limit=num_samples)
    real = evaluation.RealData.from_images(eval_images, train_images, judge, num_samples,
                                           config.seed, eval_labels)
  model = evaluation.DiffusionModel(model_dir, config.batch_size)
  sampler = model.sampler
  name = name or sampler
  grid_dir = os.path.join(results_dir, f"quality_{name}")
  denoising_timings: Dict[str, float] = {}
  denoising, curve = evaluation.denoising_metrics(model, real, config, denoising_timings)
  print(f"{sampler} model {model_dir}: PSNR {denoising['psnr']:.2f} dB at sigma "
        f"{denoising['sigma']:g} (reference {metrics_lib.REFERENCE_PSNR_DB} dB); real-vs-real "
        f"Frechet {real.frechet_floor:.4g}", flush=True)

  os.makedirs(grid_dir, exist_ok=True)
  # One tiny request first, so the first combination's wall time carries no one-off start-up cost.
  model.sample(np.zeros([1], np.int32), config.seed, guidance_scale=1.0, num_steps=1)
  combinations = []
  for num_steps, guidance_scale in combos:
    timings: Dict[str, float] = {}
    combo_start = time.perf_counter()
    sampled, samples = evaluation.sampling_metrics(model, judge, real, config, timings,
                                                   guidance_scale, num_steps)
    wall = time.perf_counter() - combo_start
    sampled.pop("judge_accuracy_on_eval", None)  # the same in every combination: once, in real_floor
    grid_path = os.path.join(grid_dir, _grid_name(num_steps, guidance_scale))
    grid = report.sample_grid(evaluation.grid_images(model, samples, config, guidance_scale,
                                                     num_steps))
    with open(grid_path, "wb") as f:
      f.write(report.png_bytes(grid))
    combinations.append({"num_steps": num_steps, "guidance_scale": guidance_scale, **sampled,
                         "timings_s": timings, "wall_s": round(wall, 3),
                         "grid_png": os.path.relpath(grid_path, results_dir)})
    frechet = sampled["frechet"]
    print(f"steps {num_steps:3d} guidance {guidance_scale:4g}: agreement "
          f"{sampled['class_agreement']['overall']:.3f}, Frechet {frechet['distance']:.4g} "
          f"({frechet['ratio'] or 0:.2f}x floor), KID {frechet['kid']:.4g}, {wall:.1f} s",
          flush=True)

  return evaluation.json_safe({
      "name": name, "model_dir": model_dir, "sampler": sampler,
      "guidance_sigma_interval": model.guidance_sigma_interval, "classifier_dir": classifier_dir,
      "examples_dir": examples_dir, "eval_config": config.to_dict(),
      "data": {"num_eval_images": len(eval_images), "num_train_images": len(train_images),
               "timings_s": data_timings},
      "reference": metrics_lib.REFERENCE_DENOISING,
      "denoising": denoising, "denoising_curve": curve, "denoising_timings_s": denoising_timings,
      "real_floor": {"num_images": real.num_images, "frechet": real.frechet_floor,
                     "kid": real.kid_floor, "judge_accuracy": real.judge_accuracy},
      "combinations": combinations,
      "total_wall_s": round(time.perf_counter() - start, 3),
  })


def _num(value: Optional[float], digits: int) -> str:
  return "n/a" if value is None else f"{value:.{digits}f}"


def _judge_accuracy_text(accuracy: Optional[Dict[str, Any]]) -> str:
  """The agreement counterpart of the floor, for results that recorded it."""
  if not accuracy:
    return ""
  return (f" The judge labels {100 * accuracy['overall']:.2f}% of those eval images as their true"
          f" digit: the agreement of samples as varied as real digits.")


def render_markdown(result: Dict[str, Any]) -> str:
  denoising, reference, floor = result["denoising"], result["reference"], result["real_floor"]
  config = result["eval_config"]
  lines = [
      f"# Sample quality: {result['sampler']} sampler, guidance above 1 at "
      f"{metrics_lib.guidance_interval_text(result.get('guidance_sigma_interval'))}", "",
      f"`{result['command']}`", "",
      f"Model `{result['model_dir']}`, judge `{result['classifier_dir']}`, "
      f"{result['data']['num_eval_images']} eval images; {result['machine']['cpus']} CPUs, "
      f"TensorFlow {result['machine']['tensorflow']}.", "",
      f"## Denoising (reference protocol: sigma {denoising['sigma']:g}, clipped, one step, "
      f"{denoising['num_images']} images)", "",
      "| metric | ours | reference |", "|---|---|---|",
  ]
  for key, label, digits in (("mse", "MSE", 4), ("rmse", "RMSE", 4), ("psnr", "PSNR (dB)", 2)):
    lines.append(f"| {label} | {_num(denoising[key], digits)} | {_num(reference[key], digits)} |")
  lines += ["", "| sigma | " + " | ".join(f"{p['sigma']:g}" for p in result["denoising_curve"])
            + " |", "|---|" + "---|" * len(result["denoising_curve"]),
            "| PSNR (dB) | " + " | ".join(_num(p["psnr"], 2) for p in result["denoising_curve"])
            + " |", ""]
  lines += [
      f"## Guided samples ({config['samples_per_class']} per digit)", "",
      f"Real-vs-real floor (train vs eval, {floor['num_images']} images each, judge features): "
      f"Frechet {_num(floor['frechet'], 3)}, KID {_num(floor['kid'], 4)}."
      + _judge_accuracy_text(floor.get("judge_accuracy")), "",
      "| steps | guidance | class agreement | Frechet | Frechet / floor | KID | sampling (s) "
      "| wall (s) | grid |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for combo in result["combinations"]:
    frechet = combo["frechet"]
    lines.append(
        f"| {combo['num_steps']} | {combo['guidance_scale']:g} "
        f"| {_num(combo['class_agreement']['overall'], 3)} | {_num(frechet['distance'], 3)} "
        f"| {_num(frechet['ratio'], 2)} | {_num(frechet['kid'], 4)} "
        f"| {combo['timings_s']['sampling']:.1f} | {combo['wall_s']:.1f} "
        f"| [png]({combo['grid_png']}) |")
  lines.append("")
  return "\n".join(lines)


def sampler_changes(args: argparse.Namespace) -> Dict[str, Any]:
  """The SamplerConfig fields to re-export the model with before measuring it."""
  changes: Dict[str, Any] = {}
  if args.sampler:
    changes["sampler"] = args.sampler
  if args.compute_dtype:
    changes["compute_dtype"] = args.compute_dtype
  if args.guidance_interval:
    low, high = args.guidance_interval
    changes.update(guidance_min_sigma=low, guidance_max_sigma=None if math.isinf(high) else high)
  return changes


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = common.argument_parser(__doc__)
  common.add_model_dir(parser)
  common.add_model_dir(parser, "--classifier-dir", "judge classifier")
  parser.add_argument("--examples-dir", required=True,
                      help="ExampleGen Examples artifact URI (with Split-train, Split-eval)")
  common.add_profile(parser, "whose EvalConfig (sigmas, batch size, seed, grid) to use, and the "
                             "noise schedule of a re-export")
  parser.add_argument("--samples-per-class", type=int, default=None,
                      help="default: the profile's")
  parser.add_argument("--denoise-num-images", type=int, default=None,
                      help="default: the profile's (the whole eval split)")
  parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
  parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 1.5, 3.0])
  parser.add_argument("--combos", type=parse_combo, nargs="+", default=None, metavar="STEPS:GUIDANCE",
                      help="only these (steps, guidance) pairs instead of --steps x --guidance")
  parser.add_argument("--sampler", choices=samplers.SAMPLERS, default=None,
                      help="re-export the model's weights with this sampler first")
  parser.add_argument("--guidance-interval", type=float, nargs=2, default=None,
                      metavar=("MIN_SIGMA", "MAX_SIGMA"),
                      help="re-export with guidance above 1 only at these noise levels "
                           "(SamplerConfig.guidance_min_sigma / guidance_max_sigma; inf = no bound)")
  parser.add_argument("--compute-dtype", choices=unet.COMPUTE_DTYPES, default=None,
                      help="re-export the same weights computing in this dtype first")
  parser.add_argument("--name", default=None, help="result file suffix; default: the sampler")
  common.add_results_dir(parser)
  args = parser.parse_args(argv)

  profile = config_lib.profile(args.profile)
  overrides = {"samples_per_class": args.samples_per_class,
               "denoise_num_images": args.denoise_num_images}
  config = dataclasses.replace(profile.eval,
                               **{k: v for k, v in overrides.items() if v is not None})
  combos = args.combos or list(itertools.product(args.steps, args.guidance))
  with common.reexported(args.model_dir, profile, sampler_changes(args)) as (model_dir, named):
    result = {**common.provenance("quality", argv),
              **measure(model_dir, args.classifier_dir, args.examples_dir, config, combos,
                        args.results_dir, args.name)}
  if named:
    result["model_dir"] = named
  name = result["name"]
  json_path = common.write_json(result, args.results_dir, f"quality_{name}.json")
  markdown = render_markdown(result)
  markdown_path = os.path.join(args.results_dir, f"quality_{name}.md")
  with open(markdown_path, "w") as f:
    f.write(markdown)
  print(markdown)
  print(f"wrote {json_path}, {markdown_path} and the grids in "
        f"{os.path.join(args.results_dir, 'quality_' + name)}")


if __name__ == "__main__":
  main()
