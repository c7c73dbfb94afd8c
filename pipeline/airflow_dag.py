"""The pipeline as an Airflow DAG, built by TFX's AirflowDagRunner: one task per component.

Copy (or link) this file into Airflow's dags folder; the environment that runs Airflow must hold
this project (scripts/install_orchestrators.sh makes one: .venv-orchestrators). It reads:

  MNIST_DIFFUSION_PROFILE        smoke, cpu (default) or full
  MNIST_DIFFUSION_PIPELINE_ROOT  artifacts (default ~/mnist-diffusion/<profile>/pipeline_root)
  MNIST_DIFFUSION_SERVING_DIR    versions pushed (default ~/mnist-diffusion/<profile>/serving_model)
  MNIST_DIFFUSION_METADATA_PATH  ML Metadata sqlite file (default <pipeline root>/metadata.sqlite)
  MNIST_DIFFUSION_DATA_DIR       MNIST directory or span root (default the embedded data/mnist)

Defaults are absolute: the scheduler and its workers do not share one working directory.
The DAG runs daily from START_DATE, one run at a time, and never back-fills missed days. Parsing
it imports TFX and TensorFlow (tens of seconds): docs/orchestrators.md gives the Airflow
settings that allow for it. The DAG's id is the pipeline's name, mnist-diffusion.
"""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)

import dataclasses
import datetime
import os

from tfx.dsl.components.base import base_component
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner
from tfx.orchestration.airflow.airflow_dag_runner import AirflowPipelineConfig

from core import config as config_lib
from pipeline import definition

ENV_PREFIX = "MNIST_DIFFUSION_"
START_DATE = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
SCHEDULE = "@daily"


def config_from_env(environ=os.environ) -> config_lib.PipelineConfig:
  """The profile named by MNIST_DIFFUSION_PROFILE, with the paths the environment gives."""

  def env(name, default=None):
    return environ.get(ENV_PREFIX + name) or default

  config = config_lib.profile(env("PROFILE", config_lib.DEFAULT_PROFILE))
  run_dir = os.path.join(os.path.expanduser("~"), "mnist-diffusion", config.profile)
  return dataclasses.replace(
      config,
      pipeline_root=env("PIPELINE_ROOT", os.path.join(run_dir, "pipeline_root")),
      serving_dir=env("SERVING_DIR", os.path.join(run_dir, "serving_model")),
      metadata_path=env("METADATA_PATH"),
      data=dataclasses.replace(config.data, data_dir=env("DATA_DIR", config.data.data_dir)))


def _with_unique_artifact_names(driver_class):
  """`driver_class`, naming each output artifact <component id>:<output>:<run id>.

  AirflowDagRunner runs components through TFX's legacy drivers, which name an output artifact
  <output>:<run id> (tfx issue #4977). ML Metadata keeps artifact names unique per type, so the
  second of the two Trainers to publish its `model` in a run fails with AlreadyExistsError; the
  component id in the name tells them apart. LocalDagRunner names artifacts its own way.
  """

  class Driver(driver_class):

    def _prepare_output_artifacts(self, input_artifacts, output_dict, exec_properties,
                                  execution_id, pipeline_info, component_info):
      outputs = super()._prepare_output_artifacts(
          input_artifacts, output_dict, exec_properties, execution_id, pipeline_info,
          component_info)
      for key, artifacts in outputs.items():
        for index, artifact in enumerate(artifacts):
          suffix = f":{index}" if len(artifacts) > 1 else ""
          artifact.name = f"{component_info.component_id}:{key}:{pipeline_info.run_id}{suffix}"
      return outputs

  Driver.__name__ = Driver.__qualname__ = f"UniqueNames{driver_class.__name__}"
  return Driver


def check_runnable(tfx_pipeline) -> None:
  """Raises ValueError naming each component input that AirflowDagRunner cannot resolve.

  TFX's legacy drivers, which AirflowDagRunner uses, resolve a component's inputs only from
  plain and union channels; a resolver function's channel (ResolvedChannel, e.g. `rolling_range`)
  would fail only when its task runs, after the upstream tasks. Resolver nodes have their own
  driver and are not checked.
  """
  # pylint: disable=g-import-not-at-top
  from tfx.dsl.components.common import resolver
  from tfx.types import channel
  problems = [
      f"{node.id}.inputs[{key!r}] is a {type(value).__name__}"
      for node in tfx_pipeline.components if not isinstance(node, resolver.Resolver)
      for key, value in node.inputs.items()
      if not isinstance(value, (channel.Channel, channel.UnionChannel))]
  if problems:
    raise ValueError("AirflowDagRunner cannot run this pipeline: its drivers resolve only plain "
                     "channels: " + "; ".join(problems))


def create_dag(config: config_lib.PipelineConfig):
  """The Airflow DAG of `config`'s pipeline."""
  tfx_pipeline = definition.create_pipeline(config)
  check_runnable(tfx_pipeline)
  for component in tfx_pipeline.components:
    if isinstance(component, base_component.BaseComponent):
      component.driver_class = _with_unique_artifact_names(component.driver_class)
  return AirflowDagRunner(AirflowPipelineConfig(airflow_dag_config={
      "schedule": SCHEDULE,
      "start_date": START_DATE,
      "catchup": False,  # a missed day is not made up: the next run trains on what is there then
      "max_active_runs": 1,  # runs share one ML Metadata sqlite file and one serving dir
  })).run(tfx_pipeline)


DAG = create_dag(config_from_env())
