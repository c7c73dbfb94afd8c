"""Scheduled retraining: one locked pipeline run, one JSON summary line, an exit code for cron.

  python -m pipeline.retrain [--profile cpu] [--data-dir ROOT] [--span N] [--cold-start]
                             [--force-bless REASON] [pipeline.run's other flags]

The run takes the pipeline root's lock (pipeline/lock.py), so two runs never share its metadata
store, and a killed run leaves no stale lock behind. The last line printed is a JSON summary: the span, the
training window, warm or cold start, the Evaluator's headline metrics, whether the model was
blessed, and the pushed version or why none was.

With --ingest-only (and --span N) it reads a span without training on it: a backlog of spans
enters the training window this way.

Exit codes (EXIT_CODES):
  0  pushed        a new model version was pushed (ingested: --ingest-only read the span)
  3  nothing_new   every component came from the cache, or the model is the one already served
  4  not_blessed   a model was trained and evaluated but not blessed; the served version stays
  5  locked        another retrain holds the lock on this pipeline root; nothing ran
  6  bad_input     the data, the pipeline root or the serving dir cannot be used; nothing ran
  1  failed        the run failed; `error` in the summary says why
  2                bad command line or configuration
Every outcome but pushed, ingested and nothing_new also prints one line on stderr naming the
cause (pipeline/cli.py); --verbose adds the traceback.
"""

import json
import os
import sys
from typing import Any, Dict, List, Optional

from core import config as config_lib
from pipeline import cli
from pipeline import lock
from pipeline import metadata
from pipeline import preflight
from pipeline import run as run_lib

EXIT_CODES = {"pushed": cli.OK, "ingested": cli.OK, "failed": cli.FAILED,
              "nothing_new": cli.NOTHING_NEW, "not_blessed": cli.NOT_BLESSED,
              "locked": cli.LOCKED, "bad_input": cli.BAD_INPUT}
PROG = "pipeline.retrain"

DIFFUSION_TRAINER_ID = "diffusion_trainer"
EVALUATOR_ID = "DiffusionEvaluator"
PUSHER_ID = "Pusher"
SERVABILITY_GATE_ID = "ServabilityGate"
EXAMPLE_GEN_ID = "MnistExampleGen"
TRANSFORM_ID = "Transform"


def _store(config: config_lib.PipelineConfig):
  return metadata.open_store(config, readonly=True)


def _last_execution_id(config: config_lib.PipelineConfig) -> int:
  if not metadata.store_exists(config):
    return 0
  return max((e.id for e in _store(config).get_executions()), default=0)


class RunRecord:
  """What ML Metadata recorded for the executions of one run (those after `since_id`)."""

  def __init__(self, config: config_lib.PipelineConfig, since_id: int):
    # pylint: disable-next=g-import-not-at-top
    from ml_metadata.proto import metadata_store_pb2
    self._pb2 = metadata_store_pb2
    self._store = _store(config)
    self._pipeline = config.pipeline_name
    self._since_id = since_id

  def execution(self, node_id: str):
    """The node's execution in this run, or None."""
    context = self._store.get_context_by_type_and_name("node", f"{self._pipeline}.{node_id}")
    if context is None:
      return None
    executions = [e for e in self._store.get_executions_by_context(context.id)
                  if e.id > self._since_id]
    return max(executions, key=lambda e: e.id) if executions else None

  def state(self, node_id: str) -> Optional[str]:
    execution = self.execution(node_id)
    if execution is None:
      return None
    return self._pb2.Execution.State.Name(execution.last_known_state)

  def failures(self) -> Dict[str, str]:
    """{node: the last line of its error} for this run's failed executions. TFX runs on past a
    resolver node that failed, with its output empty, so these need looking for."""
    failed = {}
    for context in self._store.get_contexts_by_type("node"):
      if not context.name.startswith(f"{self._pipeline}."):
        continue
      for execution in self._store.get_executions_by_context(context.id):
        if (execution.id > self._since_id
            and execution.last_known_state == self._pb2.Execution.FAILED):
          result = execution.custom_properties.get("__execution_result__")
          message = result.string_value if result is not None else ""
          try:
            message = json.loads(message).get("resultMessage", message)
          except ValueError:
            pass
          lines = [line for line in message.strip().splitlines() if line.strip()]
          failed[context.name.split(".", 1)[1]] = lines[-1] if lines else "failed"
    return failed

  def artifacts(self, node_id: str, key: str, event_type: str = "OUTPUT") -> List[Any]:
    """The MLMD artifacts of the node's execution under input or output `key`."""
    execution = self.execution(node_id)
    if execution is None:
      return []
    wanted = getattr(self._pb2.Event, event_type)
    ids = [event.artifact_id for event in self._store.get_events_by_execution_ids([execution.id])
           if event.type == wanted and event.path.steps and event.path.steps[0].key == key]
    return self._store.get_artifacts_by_id(ids)


def _property(artifact, name: str) -> Any:
  value = artifact.custom_properties.get(name)
  if value is None:
    return None
  return value.WhichOneof("value") and getattr(value, value.WhichOneof("value"))


def _infra_refusal(record: RunRecord) -> Optional[str]:
  """Why the servability gate refused this run's model, or None."""
  blessing = record.artifacts(SERVABILITY_GATE_ID, "blessing")
  if blessing and _property(blessing[0], "blessed") == 0:
    return _property(blessing[0], "reason") or "see its report"
  return None


def summarize(config: config_lib.PipelineConfig, since_id: int) -> Dict[str, Any]:
  """The summary of the run whose executions came after `since_id`, with its outcome."""
  record = RunRecord(config, since_id)
  summary: Dict[str, Any] = {}
  examples = record.artifacts(EXAMPLE_GEN_ID, "examples")
  if examples:
    summary["span"] = _property(examples[0], "span")
  window = record.artifacts(TRANSFORM_ID, "examples", "INPUT")
  summary["window"] = sorted(_property(artifact, "span") for artifact in window)
  summary["trainer"] = record.state(DIFFUSION_TRAINER_ID)
  model_runs = record.artifacts(DIFFUSION_TRAINER_ID, "model_run")
  if model_runs:
    path = os.path.join(model_runs[0].uri, "training_summary.json")
    if os.path.exists(path):
      with open(path) as f:
        training = json.load(f)
      summary["start"] = training.get("start")
      summary["start_reason"] = training.get("reason") or training.get("base_model")
  evaluations = record.artifacts(EVALUATOR_ID, "evaluation")
  if evaluations:
    path = os.path.join(evaluations[0].uri, "metrics.json")
    if os.path.exists(path):
      with open(path) as f:
        metrics = json.load(f)
      candidate = metrics["candidate"]
      summary["metrics"] = {
          "psnr": candidate["denoising"]["psnr"],
          "class_agreement": candidate["class_agreement"]["overall"],
          "frechet_ratio": candidate["frechet"].get("ratio")}
      summary["blessed"] = metrics["blessing"]["blessed"]
  pusher_state = record.state(PUSHER_ID)
  pushed = record.artifacts(PUSHER_ID, "pushed_model")
  if pusher_state == "CACHED":
    summary.update(outcome="nothing_new", reason="every component came from the cache")
  elif pusher_state == "COMPLETE" and pushed and _property(pushed[0], "pushed") == 1:
    summary.update(outcome="pushed", pushed_version=_property(pushed[0], "pushed_version"),
                   pushed_model=_property(pushed[0], "pushed_destination"))
  elif pusher_state == "COMPLETE" and pushed and _property(pushed[0], "push_skipped"):
    summary.update(outcome="nothing_new", reason=_property(pushed[0], "push_skipped"))
  elif pusher_state == "COMPLETE" and _infra_refusal(record):
    summary.update(outcome="not_blessed",
                   reason=f"the servability gate refused the model: {_infra_refusal(record)}")
  elif pusher_state == "COMPLETE":
    summary.update(outcome="not_blessed", reason="the Evaluator did not bless the model; see "
                                                 "its report")
  else:
    summary.update(outcome="failed", error=f"the Pusher did not run (state {pusher_state})")
  failures = record.failures()
  if failures and summary["outcome"] != "failed":
    summary.update(outcome="failed", error="; ".join(
        f"{node} failed: {message}" for node, message in sorted(failures.items())))
  return summary


def build_parser():
  parser = run_lib.build_parser(
      prog="python -m pipeline.retrain",
      description="Retrain on the latest data under a lock; print one JSON summary line; exit "
                  "with a code a scheduler can act on (see the module docstring).")
  parser.add_argument("--ingest-only", action="store_true",
                      help="only read the span (--span N) into the pipeline's metadata, so later "
                           "runs' training window and drift gate include it; no training")
  return parser


def retrain(config: config_lib.PipelineConfig, runner_name: str = "local",
            verbose: bool = False, ingest_only: bool = False) -> Dict[str, Any]:
  """One locked run of the pipeline; returns its summary (`outcome` is a key of EXIT_CODES).
  `ingest_only`: the span is read and its statistics computed, nothing trained."""
  try:
    preflight.check(config, training=not ingest_only)
    with lock.pipeline_root_lock(config.pipeline_root):
      since_id = _last_execution_id(config)
      try:
        run_lib.run_pipeline(config, runner_name, verbose, ingest_only)
        if ingest_only:
          record = RunRecord(config, since_id)
          examples = record.artifacts(EXAMPLE_GEN_ID, "examples")
          summary = {"outcome": "ingested",
                     "span": _property(examples[0], "span") if examples else None}
        else:
          summary = summarize(config, since_id)
      except Exception as error:  # pylint: disable=broad-except
        # A run that failed before ML Metadata was written has nothing more to say.
        try:
          summary = summarize(config, since_id) if metadata.store_exists(config) else {}
        except Exception:  # pylint: disable=broad-except  (the store may be what failed)
          summary = {}
        if verbose:
          cli.report(PROG, "the run failed", error, verbose)
        summary.update(outcome="failed", error=cli.one_line(error))
  except preflight.InputError as error:
    summary = {"outcome": "bad_input", "error": f"{error}; nothing ran"}
  except lock.Locked as error:
    summary = {"outcome": "locked", "error": str(error)}
  summary["profile"] = config.profile
  return summary


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    config = run_lib.config_from_args(args)
  except ValueError as error:
    cli.report(PROG, str(error))
    return cli.USAGE
  summary = retrain(config, args.runner, args.verbose, args.ingest_only)
  if summary["outcome"] in ("failed", "locked", "bad_input"):
    cli.report(PROG, summary["error"])
  print(json.dumps(summary, default=str), flush=True)
  return EXIT_CODES[summary["outcome"]]


if __name__ == "__main__":
  sys.exit(main())
