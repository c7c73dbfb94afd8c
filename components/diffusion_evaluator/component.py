"""DiffusionEvaluator: TFX's Evaluator role for a diffusion model, which TFMA cannot score whole.

Reads the eval split, the candidate diffusion model, the judge classifier and, optionally, the
latest blessed model as baseline; outputs a ModelEvaluation (metrics.json, sample_grid.png,
report.md, and tfma/: the denoising metrics per digit, computed with TFMA) and a ModelBlessing
that the Pusher and LatestBlessedModelStrategy understand.
"""

from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.diffusion_evaluator import executor
from core.config import EvalConfig


class DiffusionEvaluatorSpec(types.ComponentSpec):
  """Inputs, outputs and the one parameter (EvalConfig as JSON) of the DiffusionEvaluator."""

  PARAMETERS = {
      executor.EVAL_CONFIG_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.CLASSIFIER_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
  }
  OUTPUTS = {
      executor.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
      executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
  }


class DiffusionEvaluator(base_beam_component.BaseBeamComponent):
  """Scores a diffusion model and blesses it against thresholds and the last blessed model.

  A Beam component: the pipeline's beam_pipeline_args (or with_beam_pipeline_args) choose the
  runner of its denoising metrics over the eval examples (TFMA's Beam pipeline)."""

  SPEC_CLASS = DiffusionEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self,
               examples: types.BaseChannel,
               model: types.BaseChannel,
               classifier_model: types.BaseChannel,
               eval_config: EvalConfig,
               baseline_model: Optional[types.BaseChannel] = None):
    """Builds the component.

    Args:
      examples: Examples with 'train' and 'eval' splits (features `image`, `label`).
      model: the candidate diffusion Model (signatures `serving_default` and `denoise`).
      classifier_model: the judge classifier Model (logits, probabilities, features).
      eval_config: protocol, sample counts, seeds and blessing thresholds.
      baseline_model: optional Model to compare against, usually the latest blessed one.
    """
    spec = DiffusionEvaluatorSpec(
        examples=examples,
        model=model,
        classifier_model=classifier_model,
        baseline_model=baseline_model,
        eval_config=eval_config.to_json(),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        blessing=types.Channel(type=standard_artifacts.ModelBlessing),
    )
    super().__init__(spec=spec)
