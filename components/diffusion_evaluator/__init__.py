"""Custom TFX component scoring the diffusion model: denoising, guided samples, blessing."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)

from components.diffusion_evaluator.component import DiffusionEvaluator
from components.diffusion_evaluator.component import DiffusionEvaluatorSpec

__all__ = ["DiffusionEvaluator", "DiffusionEvaluatorSpec"]
