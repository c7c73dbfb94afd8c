"""Executor of the DiffusionEvaluator: a thin adapter from TFX artifacts to evaluation.py.

Writes into the `evaluation` artifact's URI:
  metrics.json      all numbers (schema below), the reference numbers, the EvalConfig and model URIs
  sample_grid.png   guided samples, one row per digit 0..9, `grid_seeds` columns
  report.md         ours vs reference, the PSNR-vs-noise curve, agreement per digit, the blessing
  tfma/             the reference denoising protocol computed by TFMA, overall and per digit
                    (EvalConfig.tfma_denoising; load it with tfma.load_eval_result(<uri>/tfma))

metrics.json:
  candidate, baseline (None without a baseline): one model's metrics each:
    denoising        {sigma, num_images, mse, rmse, psnr}   the reference protocol on the eval split
    denoising_curve  [{sigma, num_images, mse, rmse, psnr}, ...]
    sampling         {samples_per_class, num_samples, num_steps, guidance_scale, batch_size, seed,
                      sampler, guidance_sigma_interval}  the last two fixed at export
    class_agreement  {overall, per_class: [10 shares, None if no sample], num_samples}
    judge_accuracy_on_eval  the same for the judge on the real eval images of the Frechet
                     floor (their true labels): what samples as varied as real digits would score
    frechet          {num_images, distance, real_floor, ratio, kid, kid_real_floor}
    tfma_denoising   {sigma, num_images, overall: {mse, rmse, psnr, num_images},
                      per_class: {"0".."9": {mse, rmse, psnr, num_images}}, output_path}
                     candidate only, when EvalConfig.tfma_denoising: the reference protocol
                     computed by TFMA's Beam pipeline (tfma_denoising.py), sliced by digit; its
                     overall numbers are the candidate's `denoising` (computed once, on the
                     component's Beam runner)
    timings_s        {denoising or tfma_denoising, denoising_curve, sampling, judging}
  reference   {sigma, mse, rmse, psnr}           the published protocol numbers
  blessing    {blessed, reasons: ["ok: ..." | "FAIL: ..."]}
  eval_config the EvalConfig used, as a dict
  models      {candidate: {uri, id}, baseline: {uri, id, same_as_candidate, unreadable} | None,
               classifier: {uri, id}}
              unreadable: why the baseline could not be loaded or scored (then `baseline` is
              None and the blessing used the absolute thresholds alone), else None
  data        {examples_uri, num_eval_images, num_train_images, timings_s: {real_data}}
Non-finite numbers are written as null so the file stays strict JSON.

The blessing artifact follows the contract of TFX's own Evaluator (custom properties `blessed`,
`current_model`, `current_model_id`, `baseline_model`, `baseline_model_id`, and an empty BLESSED or
NOT_BLESSED file), so LatestBlessedModelStrategy and the Pusher read it unchanged.

A candidate with a NaN or infinite headline metric is never blessed ("FAIL: non-finite metrics:
psnr=nan, ..."). A baseline that cannot be loaded or scored (its files deleted or damaged, or
its metrics not finite) does not fail the run: the candidate is judged on the absolute thresholds
alone and the blessing says so (`baseline_unreadable` property and reason). Failing instead
would block every retrain for good, since the resolver offers the same latest blessed model each
time, and a broken served model is what a new blessed one replaces.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from components.diffusion_evaluator import evaluation as evaluation_lib
from components.diffusion_evaluator import metrics as metrics_lib
from components.diffusion_evaluator import report
from components.diffusion_evaluator.metrics import decide_blessing  # noqa: F401  (re-exported)
from core.config import EvalConfig
from core.config import NUM_CLASSES

# Keys of the component spec (component.py uses the same constants).
EXAMPLES_KEY = "examples"
MODEL_KEY = "model"
CLASSIFIER_MODEL_KEY = "classifier_model"
BASELINE_MODEL_KEY = "baseline_model"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"
# On a blessing given past a failed baseline comparison: why (EvalConfig.force_bless_reason).
FORCE_BLESS_REASON_PROPERTY = "force_bless_reason"
# On a blessing decided without the baseline given, because it could not be loaded or scored: why.
BASELINE_UNREADABLE_PROPERTY = metrics_lib.BASELINE_UNREADABLE
EVAL_CONFIG_KEY = "eval_config"

METRICS_FILE_NAME = "metrics.json"
SAMPLE_GRID_FILE_NAME = "sample_grid.png"
REPORT_FILE_NAME = "report.md"
TFMA_DIR_NAME = "tfma"
# The examples and wrapper model TFMA's workers read; under the artifact, so on storage a cluster's
# workers reach; deleted once TFMA is done.
TFMA_WORK_DIR_NAME = ".tfma_work"

# Headline numbers also stored as float custom properties of the evaluation artifact (MLMD queries).
_EVALUATION_PROPERTIES = {
    "psnr": ("denoising", "psnr"),
    "mse": ("denoising", "mse"),
    "rmse": ("denoising", "rmse"),
    "class_agreement": ("class_agreement", "overall"),
    "frechet_distance": ("frechet", "distance"),
    "frechet_ratio": ("frechet", "ratio"),
    "kid": ("frechet", "kid"),
}


def read_split(examples: List[types.Artifact], split: str,
               limit: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """The first `limit` (None = all) examples of a split in content order: images [N, 28, 28, 1] in
  [0, 1], labels."""
  return evaluation_lib.read_split_dir(artifact_utils.get_split_uri(examples, split), limit)


def _diffusion_model(model: types.Artifact, config: EvalConfig) -> evaluation_lib.DiffusionModel:
  return evaluation_lib.DiffusionModel(path_utils.serving_model_path(model.uri), config.batch_size)


def _tfma_denoising(model: evaluation_lib.DiffusionModel, eval_images: np.ndarray,
                    eval_labels: np.ndarray, config: EvalConfig, evaluation_uri: str,
                    make_pipeline, timings: Dict[str, float]) -> Dict[str, Any]:
  """The reference denoising protocol through TFMA's Beam pipeline (`make_pipeline`), on the
  images the numpy path would score."""
  # Imported here: TFMA is heavy, and defining the pipeline imports this module.
  from components.diffusion_evaluator import tfma_denoising  # pylint: disable=g-import-not-at-top
  clean = eval_images[:config.denoise_num_images]
  labels = eval_labels[:config.denoise_num_images]
  work_dir = os.path.join(evaluation_uri, TFMA_WORK_DIR_NAME)
  tf.io.gfile.makedirs(work_dir)
  try:
    with evaluation_lib.timed(f"TFMA denoising on {len(clean)} images, sliced by digit", timings,
                              "tfma_denoising"):
      result = tfma_denoising.run(model.loaded, clean, labels, config.denoise_sigma, config.seed,
                                  model.batch_size, os.path.join(evaluation_uri, TFMA_DIR_NAME),
                                  work_dir=work_dir, make_pipeline=make_pipeline)
  finally:
    tf.io.gfile.rmtree(work_dir)
  overall = result["overall"]
  logging.info("DiffusionEvaluator: TFMA MSE %s, RMSE %s, PSNR %s dB over %s images",
               overall["mse"], overall["rmse"], overall["psnr"], overall["num_images"])
  missing = [key for key in ("mse", "rmse", "psnr") if overall[key] is None]
  if missing or overall["num_images"] != len(clean):
    raise ValueError(f"TFMA's result at {result['output_path']} lacks {missing} or counts "
                     f"{overall['num_images']} images instead of {len(clean)}")
  return {"sigma": config.denoise_sigma, "num_images": int(len(clean)), **result}


def _reference_denoising(tfma_result: Dict[str, Any]) -> Dict[str, Any]:
  """The candidate's `denoising` entry from TFMA's overall slice (the numpy path's keys)."""
  overall = tfma_result["overall"]
  return {"sigma": tfma_result["sigma"], "mse": overall["mse"], "rmse": overall["rmse"],
          "psnr": overall["psnr"], "num_images": tfma_result["num_images"]}


def _same_artifact(a: types.Artifact, b: types.Artifact) -> bool:
  return bool(a.id and a.id == b.id) or a.uri == b.uri


def _evaluate_baseline(baseline: types.Artifact, judge: evaluation_lib.Judge,
                       real: evaluation_lib.RealData, config: EvalConfig
                       ) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
  """(the baseline's metrics, None), or (None, why it could not be loaded or scored)."""
  logging.info("DiffusionEvaluator: evaluating baseline %s", baseline.uri)
  try:
    baseline_model = _diffusion_model(baseline, config)
    baseline_metrics, _ = evaluation_lib.evaluate_model(baseline_model, judge, real, config)
  except Exception as e:  # pylint: disable=broad-except
    # Whatever broke the files (missing directory or variables, a truncated saved_model.pb, a
    # missing signature), the candidate already ran through the same code; the error is the
    # baseline's, and is recorded instead of failing every future run on it.
    logging.warning("DiffusionEvaluator: baseline %s is unreadable", baseline.uri, exc_info=True)
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return None, f"{baseline.uri}: {type(e).__name__}: {message}"
  non_finite = metrics_lib.non_finite_metrics(baseline_metrics)
  if non_finite:
    return None, f"{baseline.uri}: {metrics_lib.NON_FINITE}: {', '.join(non_finite)}"
  return baseline_metrics, None


def _write_blessing(blessing: types.Artifact, candidate: types.Artifact,
                    baseline: Optional[types.Artifact], blessed: bool, reasons: List[str],
                    exec_properties: Dict[str, Any],
                    baseline_unreadable: Optional[str] = None) -> None:
  """The ModelBlessing exactly as tfx/components/evaluator/executor.py writes it."""
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                      candidate.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, candidate.id)
  if baseline is not None:
    blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY,
                                        baseline.uri)
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY,
                                     baseline.id)
  if "current_component_id" in exec_properties:
    blessing.set_string_custom_property("component_id", exec_properties["current_component_id"])
  failures = [reason for reason in reasons if reason.startswith("FAIL")]
  # The failures; or, on a blessing, every line (a fallback from the baseline shows there too).
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY,
                                      "; ".join(failures or reasons))
  forced = metrics_lib.forced_blessing(reasons)
  if forced:
    blessing.set_string_custom_property(FORCE_BLESS_REASON_PROPERTY, forced)
  if baseline_unreadable:
    blessing.set_string_custom_property(BASELINE_UNREADABLE_PROPERTY, baseline_unreadable)
  file_name = constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME
  io_utils.write_string_file(os.path.join(blessing.uri, file_name), "")
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      constants.BLESSED_VALUE if blessed else constants.NOT_BLESSED_VALUE)
  logging.info("DiffusionEvaluator: blessed=%s written to %s", blessed, blessing.uri)


class Executor(base_beam_executor.BaseBeamExecutor):
  """Scores a diffusion model (denoising, guided samples), optionally against a baseline.

  The data-parallel part, the reference denoising protocol over the eval examples, runs as TFMA's
  Beam pipeline with the component's beam_pipeline_args (EvalConfig.tfma_denoising); the guided
  samples and the statistics over whole sets (Frechet, KID) run in the executor.
  """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    config = EvalConfig.from_json(exec_properties[EVAL_CONFIG_KEY])
    examples = input_dict[EXAMPLES_KEY]
    candidate = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    classifier = artifact_utils.get_single_instance(input_dict[CLASSIFIER_MODEL_KEY])
    baselines = input_dict.get(BASELINE_MODEL_KEY) or []
    if len(baselines) > 1:
      raise ValueError(f"There can be only one baseline model, there are {len(baselines)}.")
    baseline = baselines[0] if baselines else None
    evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
    blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])

    judge = evaluation_lib.Judge(path_utils.serving_model_path(classifier.uri), config.batch_size)
    num_samples = NUM_CLASSES * config.samples_per_class
    timings: Dict[str, float] = {}
    with evaluation_lib.timed("reading data and the real-vs-real floor", timings, "real_data"):
      eval_images, eval_labels = read_split(examples, "eval")
      train_images, _ = read_split(examples, "train", limit=num_samples)
      real = evaluation_lib.RealData.from_images(eval_images, train_images, judge, num_samples,
                                                 config.seed, eval_labels)
    logging.info("DiffusionEvaluator: %d eval images, %d images per side for Frechet distance",
                 len(eval_images), real.num_images)

    candidate_model = _diffusion_model(candidate, config)
    candidate_timings: Dict[str, float] = {}
    tfma_result, denoising = None, None
    if config.tfma_denoising:
      tfma_result = _tfma_denoising(candidate_model, eval_images, eval_labels, config,
                                    evaluation.uri, self._make_beam_pipeline, candidate_timings)
      denoising = _reference_denoising(tfma_result)
    candidate_metrics, samples = evaluation_lib.evaluate_model(
        candidate_model, judge, real, config, denoising=denoising, timings=candidate_timings)
    if tfma_result is not None:
      candidate_metrics["tfma_denoising"] = tfma_result
    baseline_metrics, baseline_unreadable = None, None
    same_as_candidate = baseline is not None and _same_artifact(candidate, baseline)
    if same_as_candidate:
      logging.info("DiffusionEvaluator: the baseline is the candidate; reusing its metrics")
      baseline_metrics = candidate_metrics
    elif baseline is not None:
      baseline_metrics, baseline_unreadable = _evaluate_baseline(baseline, judge, real, config)
    if baseline_unreadable:
      logging.warning("DiffusionEvaluator: %s: %s; blessing on the absolute thresholds only",
                      BASELINE_UNREADABLE_PROPERTY, baseline_unreadable)

    blessed, reasons = metrics_lib.decide_blessing(candidate_metrics, baseline_metrics, config,
                                                   baseline_unreadable)
    for reason in reasons:
      logging.info("DiffusionEvaluator: %s", reason)

    results = evaluation_lib.json_safe({
        "candidate": candidate_metrics,
        "baseline": baseline_metrics,
        "reference": metrics_lib.REFERENCE_DENOISING,
        "blessing": {"blessed": blessed, "reasons": reasons},
        "eval_config": config.to_dict(),
        "models": {
            "candidate": {"uri": candidate.uri, "id": candidate.id},
            "baseline": None if baseline is None else {
                "uri": baseline.uri, "id": baseline.id, "same_as_candidate": same_as_candidate,
                "unreadable": baseline_unreadable},
            "classifier": {"uri": classifier.uri, "id": classifier.id},
        },
        "data": {
            "examples_uri": examples[0].uri,
            "num_eval_images": int(len(eval_images)),
            "num_train_images": int(len(train_images)),
            "timings_s": timings,
        },
    })
    io_utils.write_string_file(os.path.join(evaluation.uri, METRICS_FILE_NAME),
                               json.dumps(results, indent=2, sort_keys=True))
    grid = report.sample_grid(evaluation_lib.grid_images(candidate_model, samples, config))
    io_utils.write_bytes_file(os.path.join(evaluation.uri, SAMPLE_GRID_FILE_NAME),
                              report.png_bytes(grid))
    io_utils.write_string_file(os.path.join(evaluation.uri, REPORT_FILE_NAME),
                               report.render_markdown(results))
    for name, (section, key) in _EVALUATION_PROPERTIES.items():
      value = results["candidate"][section][key]
      if value is not None:
        evaluation.set_float_custom_property(name, value)
    evaluation.set_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY, int(blessed))
    logging.info("DiffusionEvaluator: results written to %s", evaluation.uri)

    _write_blessing(blessing, candidate, baseline, blessed, reasons, exec_properties,
                    baseline_unreadable)
