"""Custom TFX component scoring the diffusion model: denoising, guided samples, blessing."""

from pipeline import keras_env  # noqa: F401  (must run before TensorFlow is imported)

from components.diffusion_evaluator.component import DiffusionEvaluator  # noqa: E402
from components.diffusion_evaluator.component import DiffusionEvaluatorSpec  # noqa: E402

__all__ = ["DiffusionEvaluator", "DiffusionEvaluatorSpec"]
