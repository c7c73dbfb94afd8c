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

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from components.diffusion_evaluator import evaluation  # noqa: E402
from components.diffusion_evaluator import metrics as metrics_lib  # noqa: E402
from components.diffusion_evaluator import report  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from pipeline.config import NUM_CLASSES, EvalConfig  # noqa: E402
from serving.client import resolve_model_dir  # noqa: E402
from trainer_module import export  # noqa: E402
from trainer_module import samplers  # noqa: E402
from trainer_module import unet  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# Where TFX's Trainer and Pusher put a SavedModel inside a Model artifact.
_SERVING_MODEL_SUBDIR = "Format-Serving"


def saved_model_dir(path: str) -> str:
  """A SavedModel itself, a TFX Model artifact URI, or a serving dir (highest numeric version)."""
  serving = os.path.join(path, _SERVING_MODEL_SUBDIR)
  if tf.io.gfile.exists(os.path.join(serving, "saved_model.pb")):
    return serving
  return resolve_model_dir(path)


def _grid_name(num_steps: int, guidance_scale: float) -> str:
  return f"steps{num_steps}_guidance{guidance_scale:g}.png"


def parse_combo(text: str) -> Tuple[int, float]:
  """"20:1.5" -> (20, 1.5): a step count and a guidance scale."""
  try:
    steps, guidance = text.split(":")
    return int(steps), float(guidance)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected STEPS:GUIDANCE such as 20:1.5, got {text!r}")


def reexport_with_sampler(model_dir: str, profile: config_lib.PipelineConfig,
                          export_dir: str, **sampler_fields: Any) -> str:
  """The weights of the SavedModel at `model_dir`, exported again with the sampler settings it
  records (the profile's where it records none) and `sampler_fields` replaced (another sampler,
  guidance interval, chunk limit or compute dtype): a change of one setting keeps the others, so
  a bfloat16 or DPM-Solver++ re-export measured with another chunk limit stays what it was."""
  source_dir = saved_model_dir(model_dir)
  loaded = tf.saved_model.load(source_dir)
  recorded = export.exported_sampler_config(loaded, profile.sampler)
  export.reexport_sampler(source_dir, export_dir, profile.diffusion,
                          dataclasses.replace(recorded, **sampler_fields), profile.unet,
                          loaded=loaded)
  return export_dir


def measure(model_dir: str, classifier_dir: str, examples_dir: str, config: EvalConfig,
            combos: Sequence[Tuple[int, float]], results_dir: str,
            name: Optional[str] = None) -> Dict[str, Any]:
  """All metrics for every (steps, guidance); writes a sample grid per combination to
  <results_dir>/quality_<name>/ (name defaults to the exported sampler)."""
  start = time.perf_counter()
  model_dir, classifier_dir = saved_model_dir(model_dir), saved_model_dir(classifier_dir)
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
  model.sample(np.zeros([1], np.int32), 1.0, 1, config.seed)
  combinations = []
  for num_steps, guidance_scale in combos:
    combo_config = dataclasses.replace(config, sample_steps=num_steps,
                                       guidance_scale=guidance_scale)
    timings: Dict[str, float] = {}
    combo_start = time.perf_counter()
    sampled, samples = evaluation.sampling_metrics(model, judge, real, combo_config, timings)
    wall = time.perf_counter() - combo_start
    sampled.pop("judge_accuracy_on_eval", None)  # the same in every combination: once, in real_floor
    grid_path = os.path.join(grid_dir, _grid_name(num_steps, guidance_scale))
    grid = report.sample_grid(evaluation.grid_images(model, samples, combo_config))
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


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model-dir", required=True,
                      help="diffusion SavedModel, Model artifact URI, or serving dir")
  parser.add_argument("--classifier-dir", required=True,
                      help="judge classifier SavedModel or its Model artifact URI")
  parser.add_argument("--examples-dir", required=True,
                      help="ExampleGen Examples artifact URI (with Split-train, Split-eval)")
  parser.add_argument("--profile", default="cpu", choices=sorted(config_lib.PROFILES),
                      help="whose EvalConfig (sigmas, batch size, seed, grid) to use")
  parser.add_argument("--samples-per-class", type=int, default=None,
                      help="default: the profile's")
  parser.add_argument("--denoise-num-images", type=int, default=None,
                      help="default: the profile's (the whole eval split)")
  parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
  parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 1.5, 3.0])
  parser.add_argument("--combos", type=parse_combo, nargs="+", default=None, metavar="STEPS:GUIDANCE",
                      help="only these (steps, guidance) pairs instead of --steps x --guidance")
  parser.add_argument("--sampler", choices=samplers.SAMPLERS, default=None,
                      help="re-export the model's weights (of --profile's U-Net) with this sampler")
  parser.add_argument("--guidance-interval", type=float, nargs=2, default=None,
                      metavar=("MIN_SIGMA", "MAX_SIGMA"),
                      help="re-export with guidance above 1 only at these noise levels "
                           "(SamplerConfig.guidance_min_sigma / guidance_max_sigma; inf = no bound)")
  parser.add_argument("--compute-dtype", choices=unet.COMPUTE_DTYPES, default=None,
                      help="re-export the same weights computing in this dtype first")
  parser.add_argument("--name", default=None, help="result file suffix; default: the sampler")
  parser.add_argument("--results-dir", default=RESULTS_DIR)
  args = parser.parse_args(argv)

  config = config_lib.profile(args.profile).eval
  overrides = {"samples_per_class": args.samples_per_class,
               "denoise_num_images": args.denoise_num_images}
  config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
  combos = args.combos or list(itertools.product(args.steps, args.guidance))
  with tempfile.TemporaryDirectory() as scratch:
    model_dir = args.model_dir
    sampler_fields: Dict[str, Any] = {}
    if args.sampler:
      sampler_fields["sampler"] = args.sampler
    if args.compute_dtype:
      sampler_fields["compute_dtype"] = args.compute_dtype
    if args.guidance_interval:
      low, high = args.guidance_interval
      sampler_fields.update(guidance_min_sigma=low,
                            guidance_max_sigma=None if math.isinf(high) else high)
    if sampler_fields:
      model_dir = reexport_with_sampler(model_dir, config_lib.profile(args.profile),
                                        os.path.join(scratch, "reexported"), **sampler_fields)
    result = {"command": shlex.join(["python", "-m", "benchmarks.quality", *argv]),
              "machine": machine.describe(),
              **measure(model_dir, args.classifier_dir, args.examples_dir, config, combos,
                        args.results_dir, args.name)}
    if sampler_fields:
      fields = ", ".join(f"{key}={value}" for key, value in sampler_fields.items())
      result["model_dir"] = f"{args.model_dir} (re-exported with {fields})"
  name = result["name"]
  json_path = os.path.join(args.results_dir, f"quality_{name}.json")
  with open(json_path, "w") as f:
    json.dump(result, f, indent=2)
  markdown = render_markdown(result)
  markdown_path = os.path.join(args.results_dir, f"quality_{name}.md")
  with open(markdown_path, "w") as f:
    f.write(markdown)
  print(markdown)
  print(f"wrote {json_path}, {markdown_path} and the grids in "
        f"{os.path.join(args.results_dir, 'quality_' + name)}")


if __name__ == "__main__":
  main()
