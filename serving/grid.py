"""PNG grids of generated digits: one row per requested digit string."""

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, row_lengths: Optional[Sequence[int]] = None,
              scale: int = 1) -> Image.Image:
  """Tiles uint8 images [N, H, W, 1] into a grayscale image, `row_lengths[i]` images on row i.

  Rows shorter than the longest stay black on the right (MNIST's background). Without
  `row_lengths` all images go on one row. `scale` upscales by pixel repetition: digits stay crisp.
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 1 or images.dtype != np.uint8:
    raise ValueError(f"Expected uint8 images [N, H, W, 1], got {images.dtype} {images.shape}")
  if scale < 1:
    raise ValueError(f"scale must be >= 1, got {scale}")
  row_lengths = list(row_lengths) if row_lengths is not None else [len(images)]
  if sum(row_lengths) != len(images) or min(row_lengths, default=0) < 1:
    raise ValueError(f"row_lengths {row_lengths} do not split {len(images)} images into rows")
  height, width = images.shape[1:3]
  canvas = np.zeros((len(row_lengths) * height, max(row_lengths) * width), np.uint8)
  start = 0
  for row, length in enumerate(row_lengths):
    for column, image in enumerate(images[start:start + length]):
      canvas[row * height:(row + 1) * height, column * width:(column + 1) * width] = image[..., 0]
    start += length
  if scale > 1:
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
  return Image.fromarray(canvas)  # 2-D uint8: grayscale ("L")


def save_grid(path: str, images: np.ndarray, row_lengths: Optional[Sequence[int]] = None,
              scale: int = 1) -> Image.Image:
  """Writes `make_grid(...)` to `path` as PNG (creating its directory) and returns the image.
  The file appears whole or not at all: written beside `path` under a temporary name, then renamed."""
  grid_image = make_grid(images, row_lengths, scale)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  partial = os.path.join(directory, f".{os.path.basename(path)}.partial")
  try:
    grid_image.save(partial, format="PNG")
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return grid_image
