"""Compiles the pipeline to a Kubeflow Pipelines / Vertex AI Pipelines spec (JSON), no run.

  python -m pipeline.kubeflow --profile smoke --output pipeline.json
  python -m pipeline.kubeflow --pipeline-root gs://BUCKET/root --serving-dir gs://BUCKET/serving \\
      --data-dir gs://BUCKET/mnist --image REGION-docker.pkg.dev/PROJECT/REPO/mnist-diffusion-tfx:1

TFX's KubeflowV2DagRunner compiles the same `create_pipeline(config)` that the local runners
run; every component runs in `--image`, which must hold TFX 1.16 and this project
(docs/orchestrators.md has a Dockerfile). Paths are read inside that container, so on Vertex
they are gs:// URIs. Kubeflow keeps its own metadata: the spec has no sqlite path.

Scheduling the compiled spec on Vertex AI (google-cloud-aiplatform, already in the lock; not run
in this project, which has no Google Cloud project):

  from google.cloud import aiplatform
  aiplatform.init(project="PROJECT", location="REGION")
  job = aiplatform.PipelineJob(display_name="mnist-diffusion", template_path="pipeline.json",
                               pipeline_root="gs://BUCKET/root", enable_caching=True)
  job.create_schedule(display_name="mnist-diffusion-daily", cron="0 3 * * *",
                      max_concurrent_run_count=1)
"""

import argparse
import dataclasses
import json
import os
import sys

from core import config as config_lib

# A project image, built from TFX's (docs/orchestrators.md); TFX's own image lacks this project.
DEFAULT_IMAGE = "mnist-diffusion-tfx:latest"


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m pipeline.kubeflow",
      description="Compile the pipeline to a Kubeflow Pipelines v2 / Vertex AI pipeline spec.")
  parser.add_argument("--profile", default=config_lib.DEFAULT_PROFILE,
                      choices=sorted(config_lib.PROFILES))
  parser.add_argument("--output", default="pipeline.json", help="the spec JSON to write")
  parser.add_argument("--image", default=DEFAULT_IMAGE,
                      help=f"container image every component runs in (default {DEFAULT_IMAGE})")
  parser.add_argument("--pipeline-root", default=None,
                      help="artifacts, as the containers see them (default: the profile's)")
  parser.add_argument("--serving-dir", default=None,
                      help="where Pusher writes <version>/ (default: the profile's)")
  parser.add_argument("--data-dir", default=None,
                      help="MNIST directory or span root (default: the embedded copy)")
  return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> config_lib.PipelineConfig:
  config = config_lib.profile(args.profile)
  return dataclasses.replace(
      config,
      pipeline_root=args.pipeline_root or config.pipeline_root,
      serving_dir=args.serving_dir or config.serving_dir,
      data=dataclasses.replace(config.data, data_dir=args.data_dir or config.data.data_dir))


def check_compilable(tfx_pipeline) -> None:
  """Raises ValueError naming each node that KubeflowV2DagRunner (TFX 1.16) cannot compile.

  Kubeflow has no ML Metadata store that Python resolution code could query at run time, so the
  compiler translates only two Resolver strategies, LatestArtifactStrategy and
  LatestBlessedModelStrategy, into pipeline-spec resolver tasks, and takes only plain channels as
  component inputs (no resolver functions such as `rolling_range`). Anything else fails deep
  inside the compiler with a TypeError that names no node.
  """
  # pylint: disable=g-import-not-at-top
  from tfx.dsl.components.common import resolver
  from tfx.dsl.input_resolution.strategies import latest_artifact_strategy
  from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
  from tfx.types import channel
  from tfx.utils import deprecation_utils
  supported = (latest_artifact_strategy.LatestArtifactStrategy,
               latest_blessed_model_strategy.LatestBlessedModelStrategy)
  problems = []
  for node in tfx_pipeline.components:
    if isinstance(node, resolver.Resolver):
      strategy = deprecation_utils.get_first_nondeprecated_class(
          node.exec_properties[resolver.RESOLVER_STRATEGY_CLASS])
      if strategy not in supported:
        problems.append(f"Resolver {node.id} uses {strategy.__module__}.{strategy.__name__} "
                        "(only LatestArtifactStrategy and LatestBlessedModelStrategy compile)")
      continue
    for key, value in node.inputs.items():
      if not isinstance(value, channel.Channel):
        problems.append(f"{node.id}.inputs[{key!r}] is a {type(value).__name__} "
                        "(only plain channels compile)")
  if problems:
    raise ValueError("KubeflowV2DagRunner cannot compile this pipeline: " + "; ".join(problems))


def compile_pipeline(config: config_lib.PipelineConfig, output: str,
                     image: str = DEFAULT_IMAGE) -> dict:
  """Writes the pipeline spec of `config` to `output` and returns it (as a dict)."""
  # Imported here so --help stays fast: TFX takes tens of seconds to import.
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from pipeline import definition  # pylint: disable=g-import-not-at-top

  tfx_pipeline = definition.create_pipeline(config, standard_resolvers_only=True)
  check_compilable(tfx_pipeline)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image))
  spec = runner.run(tfx_pipeline, write_out=False)
  text = json.dumps(spec, indent=2, sort_keys=True)
  # A URI made into a local path (os.path.abspath: gs://b/x -> <cwd>/gs:/b/x) would fail only
  # in the cloud; fail here instead.
  for uri in (config.pipeline_root, config.serving_dir, config.data.data_dir):
    if "://" in uri and json.dumps(uri.rstrip("/"))[1:-1] not in text:
      raise ValueError(f"create_pipeline did not keep {uri!r} as it is")
  with open(output, "w") as f:
    f.write(text)
  return spec


def main(argv=None) -> int:
  args = parse_args(argv)
  config = config_from_args(args)
  try:
    spec = compile_pipeline(config, args.output, args.image)
  except ValueError as error:
    print(f"[kubeflow] not compiled: {error}", file=sys.stderr)
    return 1
  tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
  print(f"[kubeflow] {config.profile} pipeline, {len(tasks)} tasks, image {args.image}: "
        f"{os.path.abspath(args.output)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
