"""The DiffusionEvaluator's executor called as TFX would, on artifacts with temporary URIs."""

import json
import os

from tfx.types import standard_artifacts

from components.diffusion_evaluator import executor


def run_executor(tmp_path, fakes, candidate, config, baseline=None, beam_pipeline_args=None):
  """Do() on `candidate` with the fake examples and judge of `fakes` (tests.support.fake_models);
  returns (metrics.json as a dict, the evaluation artifact, the blessing artifact)."""
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = str(tmp_path / "evaluation")
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / "blessing")
  input_dict = {
      executor.EXAMPLES_KEY: [fakes["examples"]],
      executor.MODEL_KEY: [candidate],
      executor.CLASSIFIER_MODEL_KEY: [fakes["classifier"]],
  }
  if baseline is not None:
    input_dict[executor.BASELINE_MODEL_KEY] = [baseline]
  output_dict = {executor.EVALUATION_KEY: [evaluation], executor.BLESSING_KEY: [blessing]}
  context = None
  if beam_pipeline_args is not None:
    context = executor.Executor.Context(beam_pipeline_args=beam_pipeline_args,
                                        tmp_dir=str(tmp_path / "tmp"))
  executor.Executor(context).Do(input_dict, output_dict,
                                {executor.EVAL_CONFIG_KEY: config.to_json()})
  with open(os.path.join(evaluation.uri, executor.METRICS_FILE_NAME)) as f:
    results = json.load(f)
  return results, evaluation, blessing
