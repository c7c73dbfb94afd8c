"""Model and objective experiments for the `cpu` profile: train each briefly, score it, record it.

  python -m benchmarks.sweep --classifier-dir <classifier Model artifact or SavedModel> \
      --train-steps 500 [--only baseline dropout0.3 ...]
Every experiment is the cpu profile with a few fields replaced (EXPERIMENTS). It trains with the
Trainer's own loop (train.DiffusionTrainer) on MNIST read from the idx files and scaled as the
Transform scales it, exports the sampler as the Trainer does, and is scored with the Evaluator's
functions on fewer images and samples (SWEEP_EVAL): denoising PSNR on the reference protocol,
class agreement at guidance 1 (the conditional model alone) and at the default guidance, Frechet
distance against the real-vs-real floor of the same N. The same --train-steps for every
experiment; the wall time and training images/s say what each one costs.
Resumable: checkpoints and finished results live under --work-dir, and a finished experiment is
skipped. Writes benchmarks/results/sweep.json and sweep.md.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, Mapping, Optional  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks.quality import saved_model_dir  # noqa: E402
from components.diffusion_evaluator import evaluation  # noqa: E402
from components.mnist_example_gen import idx  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from pipeline.config import EvalConfig, PipelineConfig  # noqa: E402
from trainer_module import export  # noqa: E402
from trainer_module import train as train_lib  # noqa: E402
from trainer_module import transform  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# name -> {config section: {field: value}} replaced in the cpu profile.
EXPERIMENTS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "baseline": {},
    # Runs 1-10's decoder: skips from every encoder layer, one decoder block more per level.
    "every_layer_skips": {"unet": {"decoder_skips": "every_layer"}},
    # The unconditional branch (used by guidance and by the denoising protocol) sees 3x the data.
    "dropout0.3": {"diffusion": {"label_dropout": 0.3}},
    # Space-to-depth 2x2 stem: the network runs at 14 and 7, wider (forward_cost: 0.85x the time).
    "patch2": {"unet": {"channels": (64, 96), "patch_size": 2}},
    "patch2_2blocks": {"unet": {"channels": (64, 96), "patch_size": 2, "res_blocks_per_level": 2}},
    # A third of the null-label examples: the conditional model (guidance 1) trains on 95% of them.
    # Measured against batches of 64 (the profile then), so it keeps them.
    "dropout0.05": {"diffusion": {"label_dropout": 0.05}, "train": {"batch_size": 64}},
    # Batch size at a fixed number of images: run with --train-steps scaled to keep steps x batch.
    # The cpu profile trained batches of 64 until run 12 and 32 since run 13.
    "batch64": {"train": {"batch_size": 64}},
    "batch32": {"train": {"batch_size": 32}},
    "batch16": {"train": {"batch_size": 16}},
    "eps": {"diffusion": {"prediction": "eps"}},
    # Weight-average length. The EMA warm-up, decay = min(ema_decay, (1 + step) / (10 + step)),
    # still binds at 7,200 steps (0.9987 there), so 0.999 averages over about 800 steps at the end
    # against 200 with 0.995 (the profile until run 14; 0.999 since run 15). Meaningful only with
    # the profile's full --train-steps.
    "ema0.995": {"train": {"ema_decay": 0.995}},
    "ema0.999": {"train": {"ema_decay": 0.999}},
    # Training noise levels. Uniform t puts ln(sigma) in a sech-shaped density around 0 (median
    # sigma 1, 29% of draws above sigma 2). EDM's log-normal sigma (median 0.30, 6% above 2) trains
    # more at the middle levels, where the denoising protocol's 0.4 sits; "wide" lies between the
    # two (median 0.67, 22% above 2); "high" trains more at high noise (median 1.49, 43% above 2).
    "lognormal": {"diffusion": {"training_times": "lognormal"}},
    "lognormal_wide": {"diffusion": {"training_times": "lognormal", "log_sigma_mean": -0.4,
                                     "log_sigma_std": 1.4}},
    "lognormal_high": {"diffusion": {"training_times": "lognormal", "log_sigma_mean": 0.4,
                                     "log_sigma_std": 1.6}},
    # Runs 1-8's upsampling: nearest + a 3x3 conv (forward_cost: 1.19x the FLOPs of bilinear).
    "nearest_conv": {"unet": {"upsample": "nearest_conv"}},
    "no_min_snr": {"diffusion": {"min_snr_gamma": 0.0}},
    # Narrower full-resolution level: the 28x28 convs are half the network's FLOPs (issue 4's
    # serving latency), 24 channels cost about 0.56x of 32 there.
    "narrow28": {"unet": {"channels": (24, 48, 64)}},
    # Capacity: 1.5x the channels at every level, 2.0x the parameters (1.36M), 2.1x the FLOPs
    # (0.353 GFLOP per image): is the denoising PSNR short of training or of network?
    "wide48": {"unet": {"channels": (48, 64, 96)}},
}

# Fewer images and samples than the Evaluator: enough to rank experiments, cheap enough to run many.
SWEEP_EVAL = EvalConfig(denoise_num_images=2000, denoise_curve_sigmas=(0.2, 0.8),
                        denoise_curve_num_images=500, samples_per_class=30, sample_steps=20)
SWEEP_GUIDANCE = (1.0, 1.5)
# Guidance at every step, as when the first rows ran (before the served default guided only at
# sigma >= 1), so every row of the table is scored the same way.
SWEEP_SAMPLER_FIELDS = {"guidance_min_sigma": 0.0, "guidance_max_sigma": None}


def experiment_config(name: str, train_steps: int,
                      base: Optional[PipelineConfig] = None) -> PipelineConfig:
  """`base` (default: the cpu profile) with experiment `name`'s replacements and `train_steps`
  steps."""
  base = base or config_lib.profile("cpu")
  sections = {section: dataclasses.replace(getattr(base, section), **fields)
              for section, fields in EXPERIMENTS[name].items()}
  config = dataclasses.replace(base, **sections)
  return dataclasses.replace(config, train=dataclasses.replace(config.train, train_steps=train_steps),
                             sampler=dataclasses.replace(config.sampler, **SWEEP_SAMPLER_FIELDS))


def idx_dataset(data_dir: str, split: str, batch_size: int, shuffle_seed: Optional[int] = None,
                shuffle_buffer: Optional[int] = None) -> tf.data.Dataset:
  """Batches of (images in [-1, 1] [B, 28, 28, 1], labels int32 [B]) of one idx split, scaled as
  the Transform scales them: one pass in file order, or with `shuffle_seed` shuffled (by
  `shuffle_buffer`, default the whole split) and repeated."""
  images, labels = idx.load_split(data_dir, split)
  dataset = tf.data.Dataset.from_tensor_slices((images[..., None], labels.astype(np.int32)))
  shuffled = shuffle_seed is not None
  if shuffled:
    dataset = dataset.shuffle(shuffle_buffer or len(labels), seed=shuffle_seed).repeat()
  return (dataset.map(lambda image, label: (transform.scale_pixels(image), label))
          .batch(batch_size, drop_remainder=shuffled).prefetch(2))


def mnist_dataset(data_dir: str, config: PipelineConfig) -> tf.data.Dataset:
  """The training split as the sweep trains on it: shuffled, repeated batches of the profile's size."""
  return idx_dataset(data_dir, "train", config.train.batch_size, config.train.seed,
                     config.train.shuffle_buffer)


def train_and_export(config: PipelineConfig, data_dir: str, work_dir: str) -> Dict[str, Any]:
  trainer = train_lib.DiffusionTrainer(config)
  summary = train_lib.train_diffusion(trainer, mnist_dataset(data_dir, config),
                                      os.path.join(work_dir, "checkpoints"))
  export.export_sampler(trainer.ema_model, config.diffusion, config.sampler,
                        os.path.join(work_dir, "model"), unet_config=config.unet)
  return {**summary, "parameters": trainer.model.count_params()}


def score(model_dir: str, judge: evaluation.Judge, real: evaluation.RealData,
          eval_config: EvalConfig = SWEEP_EVAL) -> Dict[str, Any]:
  model = evaluation.DiffusionModel(model_dir, eval_config.batch_size)
  timings: Dict[str, float] = {}
  denoising, curve = evaluation.denoising_metrics(model, real, eval_config, timings)
  by_guidance = {}
  for guidance_scale in SWEEP_GUIDANCE:
    sampled, _ = evaluation.sampling_metrics(
        model, judge, real, dataclasses.replace(eval_config, guidance_scale=guidance_scale), timings)
    by_guidance[f"{guidance_scale:g}"] = {"agreement": sampled["class_agreement"]["overall"],
                                          "frechet_ratio": sampled["frechet"]["ratio"]}
  return {"psnr": denoising["psnr"], "mse": denoising["mse"],
          "samples_per_class": eval_config.samples_per_class,
          "psnr_curve": {f"{point['sigma']:g}": point["psnr"] for point in curve},
          "guidance": by_guidance, "timings_s": timings}


def run_experiment(name: str, train_steps: int, data_dir: str, work_root: str,
                   judge: evaluation.Judge, real: evaluation.RealData,
                   command: str = "", eval_config: EvalConfig = SWEEP_EVAL) -> Dict[str, Any]:
  work_dir = os.path.join(work_root, f"{name}_steps{train_steps}")
  result_path = os.path.join(work_dir, "result.json")
  if os.path.exists(result_path):
    with open(result_path) as f:
      return json.load(f)
  config = experiment_config(name, train_steps)
  start = time.perf_counter()
  training = train_and_export(config, data_dir, work_dir)
  scores = score(os.path.join(work_dir, "model"), judge, real, eval_config)
  result = evaluation.json_safe({
      "name": name, "command": command, "changes": EXPERIMENTS[name], "train_steps": train_steps,
      "unet": config.unet.to_dict(), "diffusion": config.diffusion.to_dict(),
      "train": config.train.to_dict(),
      "sampler": config.sampler.to_dict(),
      "training": training, **scores, "wall_s": round(time.perf_counter() - start, 1)})
  with open(result_path, "w") as f:
    json.dump(result, f, indent=2)
  return result


def markdown_table(results: Mapping[str, Any]) -> str:
  guidance = [f"{g:g}" for g in SWEEP_GUIDANCE]
  header = (["experiment", "params", "train s", "images/s", "PSNR dB"]
            + [f"agree g{g}" for g in guidance] + [f"FD/floor g{g}" for g in guidance])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for result in results["experiments"]:
    training = result["training"]
    row = [result["name"], f"{training['parameters']:,}", f"{training['wall_seconds']:.0f}",
           f"{training['images_per_second']:.1f}", f"{result['psnr']:.2f}"]
    row += [f"{100 * result['guidance'][g]['agreement']:.1f}%" for g in guidance]
    row += [f"{result['guidance'][g]['frechet_ratio']:.2f}" for g in guidance]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def read_results(results_dir: str, name: str, empty: Dict[str, Any]) -> Dict[str, Any]:
  """<name>.json as an earlier run left it (new rows are added to it), else `empty`."""
  path = os.path.join(results_dir, f"{name}.json")
  if not os.path.exists(path):
    return empty
  with open(path) as f:
    return json.load(f)


def write_results(results_dir: str, name: str, results: Mapping[str, Any], table: str) -> None:
  """Writes <name>.json and the markdown <name>.md after each experiment (so a stopped run keeps
  what it finished), and prints the table."""
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, f"{name}.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(results_dir, f"{name}.md"), "w") as f:
    f.write(table)
  print(table, flush=True)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--classifier-dir", required=True,
                      help="the classifier Trainer's Model artifact URI, or its SavedModel")
  parser.add_argument("--data-dir", default=config_lib.EMBEDDED_MNIST_DIR)
  parser.add_argument("--train-steps", type=int, default=500)
  parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), default=list(EXPERIMENTS))
  parser.add_argument("--work-dir", default=os.path.join("runs", "sweep"))
  parser.add_argument("--results-dir", default=RESULTS_DIR)
  # More samples than SWEEP_EVAL's 30 per digit tell closer experiments apart (1,000 samples: a
  # standard error of about 1 point at 90% agreement); such rows go to their own results file.
  parser.add_argument("--samples-per-class", type=int, default=SWEEP_EVAL.samples_per_class)
  parser.add_argument("--name", default="sweep", help="results file stem: <name>.json, <name>.md")
  args = parser.parse_args(argv)
  eval_config = dataclasses.replace(SWEEP_EVAL, samples_per_class=args.samples_per_class)

  judge = evaluation.Judge(saved_model_dir(args.classifier_dir), eval_config.batch_size)
  eval_images, _ = idx.load_split(args.data_dir, "t10k")
  train_images, _ = idx.load_split(args.data_dir, "train", max_examples=10_000)
  to_unit = lambda pixels: pixels[..., None].astype(np.float32) / 255.0  # noqa: E731
  num_samples = eval_config.samples_per_class * 10
  real = evaluation.RealData.from_images(to_unit(eval_images), to_unit(train_images), judge,
                                         num_samples, eval_config.seed)
  results = read_results(args.results_dir, args.name, {"experiments": []})
  for name in args.only:
    # The command that reproduces this experiment alone (each one is independent and seeded).
    command = (f"python -m benchmarks.sweep --classifier-dir {shlex.quote(args.classifier_dir)} "
               f"--train-steps {args.train_steps} --only {name}")
    if args.samples_per_class != SWEEP_EVAL.samples_per_class:
      command += f" --samples-per-class {args.samples_per_class} --name {shlex.quote(args.name)}"
    result = run_experiment(name, args.train_steps, args.data_dir, args.work_dir, judge, real,
                            command, eval_config)
    results["experiments"] = [r for r in results["experiments"]
                              if (r["name"], r["train_steps"]) != (name, args.train_steps)]
    results["experiments"].append(result)
    results.update({"machine": machine.describe(), "sweep_eval": eval_config.to_dict(),
                    "guidance_scales": list(SWEEP_GUIDANCE)})
    write_results(args.results_dir, args.name, results, markdown_table(results))


if __name__ == "__main__":
  main()
