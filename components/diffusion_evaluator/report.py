"""What the diffusion evaluator writes for people: the sample grid and report.md."""

from __future__ import annotations

import io
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from components.diffusion_evaluator import metrics as metrics_lib

_GRID_PADDING = 2  # pixels between cells, so neighbouring digits do not merge


def sample_grid(images: np.ndarray, scale: int = 2) -> Image.Image:
  """Tiles images [rows, cols, H, W(, 1)] (uint8, or float in [0, 1]) into one grayscale image.

  Row r is one digit, column c one seed: the layout of the evaluator's grid.
  """
  images = np.asarray(images)
  if images.ndim == 5:
    images = images[..., 0]
  if images.ndim != 4:
    raise ValueError(f"Expected [rows, cols, H, W(, 1)] images, got shape {images.shape}")
  if images.dtype != np.uint8:
    images = np.nan_to_num(images, nan=0.0)  # a NaN model's samples show as black cells
    images = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
  rows, cols, height, width = images.shape
  cell_h, cell_w = height + _GRID_PADDING, width + _GRID_PADDING
  canvas = np.zeros((rows * cell_h + _GRID_PADDING, cols * cell_w + _GRID_PADDING), np.uint8)
  for row in range(rows):
    for col in range(cols):
      top, left = _GRID_PADDING + row * cell_h, _GRID_PADDING + col * cell_w
      canvas[top:top + height, left:left + width] = images[row, col]
  grid = Image.fromarray(canvas, mode="L")
  if scale != 1:
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
  return grid


def png_bytes(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def _num(value: Optional[float], digits: int = 4) -> str:
  return "n/a" if value is None else f"{value:.{digits}f}"


def _model_columns(metrics: Mapping[str, Any]) -> Sequence[str]:
  """Keys of the evaluated models in metrics.json, candidate first."""
  return ["candidate"] + (["baseline"] if metrics.get("baseline") else [])


def _judge_accuracy_rows(accuracy: Optional[Mapping[str, Any]]) -> List[str]:
  """The judge on real eval images: what samples as varied as real digits would score."""
  if not accuracy:
    return []
  return [f"| judge on real eval images ({_num(accuracy['overall'], 3)} overall) | "
          + " | ".join(_num(share, 2) for share in accuracy["per_class"]) + " |"]


def _tfma_denoising_lines(tfma: Optional[Mapping[str, Any]]) -> List[str]:
  """The candidate's TFMA denoising numbers per digit slice (nothing when TFMA was off)."""
  if not tfma:
    return []
  overall, per_class = tfma["overall"], tfma["per_class"]
  digits = list(per_class)
  return [
      f"## Denoising per digit (TFMA, candidate, {tfma['num_images']} images)",
      "",
      f"Overall, computed by TFMA: MSE {_num(overall['mse'])}, RMSE {_num(overall['rmse'])}, "
      f"PSNR {_num(overall['psnr'], 2)} dB. Load the slices with "
      "`tfma.load_eval_result('<this artifact>/tfma')`.",
      "",
      "| digit | " + " | ".join(digits) + " |",
      "|---|" + "---|" * len(digits),
      "| images | " + " | ".join(str(per_class[d]["num_images"]) for d in digits) + " |",
      "| MSE | " + " | ".join(_num(per_class[d]["mse"]) for d in digits) + " |",
      "| PSNR (dB) | " + " | ".join(_num(per_class[d]["psnr"], 2) for d in digits) + " |",
      "",
  ]


def render_markdown(metrics: Mapping[str, Any]) -> str:
  """report.md from the content of metrics.json (see executor.py for its schema)."""
  models = _model_columns(metrics)
  reference = metrics["reference"]
  blessing = metrics["blessing"]
  lines = ["# Diffusion model evaluation", ""]
  lines.append(f"**{'BLESSED' if blessing['blessed'] else 'NOT BLESSED'}**")
  lines.append("")
  for reason in blessing["reasons"]:
    lines.append(f"- {reason}")
  lines.append("")

  denoising = metrics["candidate"]["denoising"]
  lines += [
      f"## Denoising (reference protocol: sigma {denoising['sigma']:g}, clipped, one step, "
      f"{denoising['num_images']} eval images)",
      "",
      "| metric | " + " | ".join(models) + " | reference |",
      "|---|" + "---|" * len(models) + "---|",
  ]
  for key, label, digits in (("mse", "MSE", 4), ("rmse", "RMSE", 4), ("psnr", "PSNR (dB)", 2)):
    values = [_num(metrics[model]["denoising"][key], digits) for model in models]
    lines.append(f"| {label} | " + " | ".join(values) + f" | {_num(reference[key], digits)} |")
  lines.append("")
  lines += _tfma_denoising_lines(metrics["candidate"].get("tfma_denoising"))

  lines += ["## PSNR vs noise (candidate)", "", "| sigma | images | MSE | PSNR (dB) |",
            "|---|---|---|---|"]
  for point in metrics["candidate"]["denoising_curve"]:
    lines.append(f"| {point['sigma']:g} | {point['num_images']} | {_num(point['mse'])} | "
                 f"{_num(point['psnr'], 2)} |")
  lines.append("")

  agreement = metrics["candidate"]["class_agreement"]
  sampling = metrics["candidate"]["sampling"]
  lines += [
      f"## Guided samples ({sampling['samples_per_class']} per digit, {sampling['num_steps']} "
      f"steps, guidance {sampling['guidance_scale']:g})",
      "",
      "| | " + " | ".join(models) + " |",
      "|---|" + "---|" * len(models),
      "| sampler (fixed at export) | " + " | ".join(
          metrics_lib.sampling_setup(metrics[model].get("sampling")) for model in models) + " |",
      "| class agreement | " + " | ".join(
          _num(metrics[model]["class_agreement"]["overall"], 3) for model in models) + " |",
      "| Frechet distance | " + " | ".join(
          _num(metrics[model]["frechet"]["distance"], 3) for model in models) + " |",
      "| Frechet / real-vs-real floor | " + " | ".join(
          _num(metrics[model]["frechet"]["ratio"], 2) for model in models) + " |",
      "| KID | " + " | ".join(
          _num(metrics[model]["frechet"]["kid"], 4) for model in models) + " |",
      "",
      f"Real-vs-real floor (train vs eval, {metrics['candidate']['frechet']['num_images']} images "
      f"each, judge features): Frechet {_num(metrics['candidate']['frechet']['real_floor'], 3)}, "
      f"KID {_num(metrics['candidate']['frechet']['kid_real_floor'], 4)}.",
      "",
      "| digit | " + " | ".join(str(digit) for digit in range(len(agreement["per_class"]))) + " |",
      "|---|" + "---|" * len(agreement["per_class"]),
      "| agreement | " + " | ".join(_num(share, 2) for share in agreement["per_class"]) + " |",
      *_judge_accuracy_rows(metrics["candidate"].get("judge_accuracy_on_eval")),
      "",
      "![samples: one row per digit](sample_grid.png)",
      "",
  ]

  model_uris = metrics["models"]
  lines += ["## Models", ""]
  for role in ("candidate", "baseline", "classifier"):
    info = model_uris.get(role)
    if info:
      lines.append(f"- {role}: `{info['uri']}` (id {info['id']})")
      if info.get("unreadable"):
        lines.append(f"  - {metrics_lib.BASELINE_UNREADABLE}: {info['unreadable']}; not compared")
  lines.append("")
  return "\n".join(lines)
