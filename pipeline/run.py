"""Command line entry point: builds the pipeline from a profile and runs it.

  python -m pipeline.run                      # cpu profile, embedded MNIST, LocalDagRunner
  python -m pipeline.run --profile smoke --pipeline-root /tmp/p --serving-dir /tmp/s
  python -m pipeline.run --runner beam --beam multi-process
  python -m pipeline.run --beam portable      # local job server + worker pool (pipeline/beam.py)
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from core import config as config_lib
from pipeline import beam
from pipeline import cli
from pipeline import lock
from pipeline import metadata
from pipeline import preflight

RUNNERS = ("local", "beam")


def build_parser(prog: str = "python -m pipeline.run",
                 description: str = "Train, evaluate and push the MNIST class-conditional "
                                    "diffusion model with TFX.") -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=prog, description=description)
  parser.add_argument("--profile", default=config_lib.DEFAULT_PROFILE,
                      choices=sorted(config_lib.PROFILES),
                      help="named configuration: smoke (minutes, for tests), cpu (default), full")
  parser.add_argument("--data-dir", default=None,
                      help="MNIST idx(.gz) directory (default: the embedded copy in data/mnist), "
                           "a data root of span-N/ directories, or a TFDS data_dir with "
                           "--source tfds")
  parser.add_argument("--span", type=int, default=None,
                      help="the span to process (default: the latest complete one)")
  parser.add_argument("--cold-start", action="store_true",
                      help="train from scratch even when a blessed model could be continued")
  parser.add_argument("--force-bless", default=None, metavar="REASON",
                      help="bless a model that misses only the baseline comparison (absolute "
                           "thresholds still apply); the reason is recorded in the blessing")
  parser.add_argument("--source", choices=("idx", "tfds"), default=None,
                      help="where examples come from (default: idx)")
  parser.add_argument("--pipeline-root", default=None,
                      help="artifacts and ML Metadata (default: runs/<profile>/pipeline_root)")
  parser.add_argument("--serving-dir", default=None,
                      help="where Pusher writes <version>/ for TF Serving "
                           "(default: runs/<profile>/serving_model)")
  parser.add_argument("--metadata-path", default=None,
                      help="ML Metadata sqlite file (default: <pipeline-root>/metadata.sqlite)")
  parser.add_argument("--metadata-mysql", default=None, metavar="HOST:PORT/DB",
                      type=metadata.mysql_address_argument,
                      help="ML Metadata on a MySQL-compatible server instead of the sqlite file; "
                           f"user and password from ${metadata.USER_ENV} and "
                           f"${metadata.PASSWORD_ENV}")
  parser.add_argument("--runner", choices=RUNNERS, default="local",
                      help="local: LocalDagRunner; beam: BeamDagRunner (components as Beam stages)")
  parser.add_argument("--beam", choices=beam.PRESETS, default=beam.IN_MEMORY,
                      help="the data components' Beam runner: in-memory (DirectRunner in this "
                           "process), multi-process (DirectRunner, one worker per core), portable "
                           "(PortableRunner; a local job server and worker pool unless given)")
  parser.add_argument("--job-endpoint", default=None, metavar="HOST:PORT",
                      help="--beam portable: the job server (Flink, Spark or Beam's own)")
  parser.add_argument("--worker-pool", default=None, metavar="HOST:PORT",
                      help="--beam portable: the SDK worker pool (EXTERNAL environment)")
  parser.add_argument("--beam-arg", action="append", default=[], metavar="ARG",
                      help="a Beam pipeline argument, repeatable (after the preset's: the last "
                           "value of a flag wins)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="set one config field, repeatable: --set train.train_steps=500 "
                           "(values parse as JSON: numbers, true/false, null, [lists])")
  parser.add_argument("--no-cache", action="store_true", help="re-run every component")
  parser.add_argument("--verbose", action="store_true",
                      help="show TFX's own INFO logs, and the traceback of an error")
  return parser


def parse_args(argv=None) -> argparse.Namespace:
  return build_parser().parse_args(argv)


def config_from_args(args: argparse.Namespace) -> config_lib.PipelineConfig:
  """The profile's config with the flags applied; ValueError names a refused flag or value."""
  config = config_lib.profile(args.profile)
  for item in args.overrides:
    key, separator, value = item.partition("=")
    if not separator:
      raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    config = config_lib.override(config, key.strip(), config_lib.parse_value(value))
  run_dir = os.path.join("runs", args.profile)
  data = dataclasses.replace(config.data, data_dir=args.data_dir or config.data.data_dir,
                             source=args.source or config.data.source, span=args.span)
  train = dataclasses.replace(config.train, warm_start=not args.cold_start)
  evaluation = dataclasses.replace(config.eval, force_bless_reason=args.force_bless)
  if (args.job_endpoint or args.worker_pool) and args.beam != beam.PORTABLE:
    raise ValueError("--job-endpoint and --worker-pool need --beam portable")
  return dataclasses.replace(
      config, data=data, train=train, eval=evaluation,
      pipeline_root=args.pipeline_root or os.path.join(run_dir, "pipeline_root"),
      serving_dir=args.serving_dir or os.path.join(run_dir, "serving_model"),
      metadata_path=args.metadata_path, metadata_mysql=args.metadata_mysql,
      enable_cache=not args.no_cache,
      beam_pipeline_args=beam.preset_args(
          args.beam, config.beam_pipeline_args, job_endpoint=args.job_endpoint,
          worker_pool=args.worker_pool) + tuple(args.beam_arg))


def configure_logging(verbose: bool):
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from pipeline import progress  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.INFO)
  # absl's own stderr handler prints everything at INFO; keep it only with --verbose.
  absl_logging.get_absl_handler().setLevel(logging.INFO if verbose else logging.WARNING)
  return progress.install()


def find_outputs(config: config_lib.PipelineConfig) -> dict:
  """Latest pushed model version and latest evaluation report, found on disk."""
  from core import serving_contract  # pylint: disable=g-import-not-at-top  (TensorFlow: slow)
  outputs = {}
  pushed = serving_contract.latest_version_dir(os.path.abspath(config.serving_dir))
  if pushed:
    outputs["pushed_model"] = pushed
  evaluator_dir = os.path.join(os.path.abspath(config.pipeline_root), "DiffusionEvaluator",
                               "evaluation")
  if os.path.isdir(evaluator_dir):
    runs = sorted((r for r in os.listdir(evaluator_dir) if r.isdigit()), key=int)
    if runs:
      outputs["evaluation"] = os.path.join(evaluator_dir, runs[-1])
      outputs["report"] = os.path.join(evaluator_dir, runs[-1], "report.md")
  return outputs


def run_pipeline(config: config_lib.PipelineConfig, runner_name: str = "local",
                 verbose: bool = False, ingest_only: bool = False) -> None:
  """Builds the pipeline from `config` and runs it, printing one line per component.
  `ingest_only`: only its ExampleGen and StatisticsGen (definition.ingestion_pipeline)."""
  handler = configure_logging(verbose)
  # Imported here so --help stays fast: TFX takes tens of seconds to import.
  from pipeline import definition  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top

  os.makedirs(config.pipeline_root, exist_ok=True)
  print(f"[pipeline] profile {config.profile}: data {config.data.data_dir} ({config.data.source}), "
        f"root {os.path.abspath(config.pipeline_root)}, "
        f"serving {os.path.abspath(config.serving_dir)}, runner {runner_name}", flush=True)
  if runner_name == "local":
    runner = tfx.orchestration.LocalDagRunner()
  else:
    # Not exported under tfx.v1 in 1.16; this is TFX's own Beam orchestrator.
    from tfx.orchestration.beam import beam_dag_runner  # pylint: disable=g-import-not-at-top
    runner = beam_dag_runner.BeamDagRunner()
  started = time.time()
  # Portable args without a job endpoint or worker pool: local ones for the length of the run.
  with beam.local_services(config.beam_pipeline_args,
                           os.path.join(config.pipeline_root, "beam_services")) as beam_args:
    config = dataclasses.replace(config, beam_pipeline_args=tuple(beam_args))
    runner.run(definition.ingestion_pipeline(config) if ingest_only
               else definition.create_pipeline(config))
  print(f"[pipeline] done in {time.time() - started:.0f} s", flush=True)
  for node, seconds, cached in handler.summary:
    print(f"  {node:32s} {seconds:7.1f} s{'  (cached)' if cached else ''}")


# Exit code when another run holds the pipeline root (pipeline.retrain uses the same).
LOCKED_EXIT_CODE = cli.LOCKED
PROG = "pipeline.run"


def main(argv=None) -> int:
  """Runs the pipeline; returns an exit code of pipeline/cli.py, printing one line on error."""
  args = parse_args(argv)
  try:
    config = config_from_args(args)
  except ValueError as error:
    cli.report(PROG, str(error))
    return cli.USAGE
  try:
    preflight.check(config)
    with lock.pipeline_root_lock(config.pipeline_root):
      run_pipeline(config, args.runner, args.verbose)
  except lock.Locked as error:
    cli.report(PROG, f"{error}; nothing ran")
    return cli.LOCKED
  except preflight.InputError as error:
    cli.report(PROG, f"{error}; nothing ran")
    return cli.BAD_INPUT
  except Exception as error:  # pylint: disable=broad-except
    cli.report(PROG, cli.one_line(error) + ("" if args.verbose else f" ({cli.VERBOSE_HINT})"),
               error, args.verbose)
    return cli.FAILED
  outputs = find_outputs(config)
  if "pushed_model" in outputs:
    print(f"[pipeline] pushed model: {outputs['pushed_model']}")
  else:
    print("[pipeline] no model pushed (not blessed, or Pusher skipped); see the report.")
  if "report" in outputs:
    print(f"[pipeline] evaluation report: {outputs['report']}")
    print(f"[pipeline] metrics and sample grid: {outputs['evaluation']}")
  print(json.dumps(outputs))
  return 0


if __name__ == "__main__":
  sys.exit(main())
