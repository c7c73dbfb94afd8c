"""What clipping the noisy images costs one-step denoising, and what un-clipping them wins back.

  python -m benchmarks.denoise_clipping --model-dir runs/cpu/serving_model \
      --examples-dir <ExampleGen Examples uri> --num-images 1000 --sigmas 0.1 0.4 0.8
For each sigma, the same seeded noise (components/diffusion_evaluator/metrics.add_noise) goes
through the bare network (the U-Net of --profile, weights restored from the SavedModel, so the
un-clipping measured is this checkout's, whatever the model was exported with), PSNR as in the
Evaluator:
  gaussian:      x0 + sigma n, not clipped;
  clipped_mean:  clip(x0 + sigma n, 0, 1) (the reference protocol), pixels on the bounds moved to
                 the mean of their Gaussian tail (trainer_module/clipped_noise.py: what `denoise`
                 does);
  clipped_draw:  the same pixels moved to one seeded draw from that tail instead (what `denoise`
                 did until the mean replaced it);
  clipped_raw:   the clipped images as they are;
  clipped_mean_labelled: clipped_mean with each image's true label instead of the null label:
                 what the class, which the noisy image alone leaves uncertain, is worth (`denoise`
                 takes no labels: the protocol gives the denoiser the noisy image only).
Writes benchmarks/results/<--name, default denoise_clipping>.json and prints a markdown table.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from typing import Any, Dict, Optional, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks.quality import RESULTS_DIR, saved_model_dir  # noqa: E402
from components.diffusion_evaluator import evaluation  # noqa: E402
from components.diffusion_evaluator import metrics as metrics_lib  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from trainer_module import clipped_noise  # noqa: E402
from trainer_module import export  # noqa: E402
from trainer_module import samplers  # noqa: E402

RESULT_NAME = "denoise_clipping"
VARIANTS = ("gaussian", "clipped_mean", "clipped_draw", "clipped_raw", "clipped_mean_labelled")
VARIANT_TITLES = ("Gaussian, not clipped", "clipped, tail mean (`denoise`)",
                  "clipped, one tail draw", "clipped, fed raw", "clipped, tail mean, true label")


def raw_network_denoiser(model_dir: str, profile: config_lib.PipelineConfig, batch_size: int):
  """One-step x0 estimate of the bare network, inputs taken as they are (no un-clipping);
  unconditional unless `labels` are given."""
  network = export.restore_unet(model_dir, profile.unet)
  schedule = export.schedule_from_config(profile.diffusion)

  def denoise(noisy: np.ndarray, sigma: float, labels: Optional[np.ndarray] = None) -> np.ndarray:
    if labels is None:
      labels = np.full([len(noisy)], profile.sampler.null_label, np.int32)
    denoised = []
    for _, rows in evaluation.batches(len(noisy), batch_size):
      denoised.append(samplers.denoise_unit_range(
          network, tf.constant(noisy[rows]), sigma, tf.constant(labels[rows]), schedule,
          profile.diffusion.prediction).numpy())
    return np.concatenate(denoised)

  return denoise


def tail_draw(clipped: np.ndarray, sigma: float, seed: int) -> np.ndarray:
  """Pixels on 0 or 1 moved beyond the bound by one seeded draw from the Gaussian tail."""
  tails = sigma * np.abs(tf.random.stateless_normal(clipped.shape, seed=[seed, 1]).numpy())
  return np.where(clipped == 0.0, -tails, np.where(clipped == 1.0, 1.0 + tails, clipped))


def measure(model_dir: str, examples_dir: str, profile: config_lib.PipelineConfig,
            num_images: int, sigmas: Sequence[float]) -> Dict[str, Any]:
  model_dir = saved_model_dir(model_dir)
  eval_config = profile.eval
  clean, labels = evaluation.read_split_dir(os.path.join(examples_dir, "Split-eval"), num_images)
  denoise = raw_network_denoiser(model_dir, profile, eval_config.batch_size)
  rows = []
  for sigma in sigmas:
    clipped = metrics_lib.add_noise(clean, sigma, eval_config.seed)
    noise = tf.random.stateless_normal(clean.shape, seed=[eval_config.seed, 0]).numpy()
    inputs = {"gaussian": clean + np.float32(sigma) * noise,  # add_noise's draw, left unclipped
              "clipped_mean": clipped_noise.unclip(clipped, sigma).numpy(),
              "clipped_draw": tail_draw(clipped, sigma, eval_config.seed),
              "clipped_raw": clipped}
    inputs["clipped_mean_labelled"] = inputs["clipped_mean"]
    given_labels = {"clipped_mean_labelled": labels}  # every other variant: unconditional
    row = {"sigma": sigma, **{variant: metrics_lib.denoising_metrics(
        clean, denoise(inputs[variant].astype(np.float32), sigma, given_labels.get(variant)))
        for variant in VARIANTS}}
    rows.append(row)
    print(f"sigma {sigma:g}: " + ", ".join(f"{variant} {row[variant]['psnr']:.2f} dB"
                                           for variant in VARIANTS), flush=True)
  return evaluation.json_safe({"model_dir": model_dir, "examples_dir": examples_dir,
                               "num_images": len(clean), "seed": eval_config.seed, "rows": rows})


def markdown_table(result: Dict[str, Any]) -> str:
  lines = ["| sigma | " + " | ".join(f"{title} (dB)" for title in VARIANT_TITLES) + " |",
           "|---" * (len(VARIANTS) + 1) + "|"]
  for row in result["rows"]:
    lines.append(f"| {row['sigma']:g} | " + " | ".join(f"{row[variant]['psnr']:.2f}"
                                                      for variant in VARIANTS) + " |")
  return "\n".join(lines)


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model-dir", required=True,
                      help="diffusion SavedModel, Model artifact URI, or serving dir")
  parser.add_argument("--examples-dir", required=True,
                      help="ExampleGen Examples artifact URI (with Split-eval)")
  parser.add_argument("--profile", default="cpu", choices=sorted(config_lib.PROFILES),
                      help="the U-Net the model was trained with, and the Evaluator's seed")
  parser.add_argument("--num-images", type=int, default=1000)
  parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.4, 0.8])
  parser.add_argument("--results-dir", default=RESULTS_DIR)
  parser.add_argument("--name", default=RESULT_NAME,
                      help="results file <results-dir>/<name>.json")
  args = parser.parse_args(argv)
  result = {"command": shlex.join(["python", "-m", "benchmarks.denoise_clipping", *argv]),
            "machine": machine.describe(),
            **measure(args.model_dir, args.examples_dir, config_lib.profile(args.profile),
                      args.num_images, args.sigmas)}
  os.makedirs(args.results_dir, exist_ok=True)
  path = os.path.join(args.results_dir, f"{args.name}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(markdown_table(result))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
