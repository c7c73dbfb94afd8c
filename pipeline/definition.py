"""create_pipeline(config): the whole TFX pipeline as a pure function of one PipelineConfig.

  MnistExampleGen (a span) -> StatisticsGen -> SchemaGen -> ExampleValidator -> AnomalyGate
                                           -> DriftGate (vs the previous span's statistics)
  -> Transform (the last window_spans spans) -> Trainer "diffusion_trainer"
                                             + Trainer "classifier_trainer"
  -> DiffusionEvaluator (baseline: latest blessed model) -> Pusher -> <serving_dir>/<version>/
  -> ServabilityGate (the model loaded and called as TF Serving would) -> Pusher's infra_blessing
The latest blessed model is also the diffusion Trainer's base model (warm start).
"""

import os
from typing import Optional, Sequence

from tfx import v1 as tfx

from components.anomaly_gate import AnomalyGate
from components.atomic_pusher.component import AtomicPusher
from components.diffusion_evaluator import DiffusionEvaluator
from components.drift_gate.component import DriftGate
from components.drift_gate.component import LatestStatisticsPerSpanStrategy
from components.mnist_example_gen.component import MnistExampleGen
from components.servability_gate.component import ServabilityGate
from core.config import PipelineConfig
from pipeline import metadata
from pipeline import resolvers
from pipeline import windows
from trainer_module import train as train_lib

PREPROCESSING_FN = "trainer_module.transform.preprocessing_fn"
DIFFUSION_RUN_FN = "trainer_module.train.run_fn"
CLASSIFIER_RUN_FN = "trainer_module.classifier.run_fn"

# Node ids, used by the runner's progress report and by tests.
DIFFUSION_TRAINER_ID = "diffusion_trainer"
CLASSIFIER_TRAINER_ID = "classifier_trainer"
RESOLVER_ID = "latest_blessed_model_resolver"
SPAN_STATISTICS_RESOLVER_ID = "span_statistics_resolver"
PUSHER_ID = "Pusher"
SERVABILITY_GATE_ID = "ServabilityGate"
EVAL_EXAMPLE_GEN_ID = "eval_example_gen"


def _path(path: str) -> str:
  """An absolute local path, or a URI (gs://...) as it is."""
  return path if "://" in path else os.path.abspath(path)


def ingestion_nodes(config: PipelineConfig):
  """(ExampleGen, StatisticsGen) of the span `config.data.span` names: what a run leaves of a span
  for later runs' training window and drift baseline."""
  example_gen = MnistExampleGen(
      data_dir=_path(config.data.data_dir), source=config.data.source,
      span=config.data.span,
      max_train_examples=config.data.max_train_examples,
      max_eval_examples=config.data.max_eval_examples)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
  return example_gen, statistics_gen


def ingestion_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
  """The pipeline's ingestion nodes alone, under its name and metadata: registers a span (a
  backlog, say) without training on it."""
  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name, pipeline_root=_path(config.pipeline_root),
      components=list(ingestion_nodes(config)), enable_cache=config.enable_cache,
      metadata_connection_config=metadata.connection_config(config),
      beam_pipeline_args=list(config.beam_pipeline_args))


def create_pipeline(config: PipelineConfig,
                    beam_pipeline_args: Optional[Sequence[str]] = None,
                    standard_resolvers_only: bool = False) -> tfx.dsl.Pipeline:
  """Builds the pipeline; reads nothing but a listing of the data dir (spans or not).

  `standard_resolvers_only`: for orchestrators that compile only TFX's built-in resolver
  strategies (Kubeflow V2 / Vertex AI in TFX 1.16): no training window (Transform reads the new
  span), no drift baseline (the drift gate passes), and the base model and baseline are TFX's
  LatestBlessedModelStrategy (a rerun warm-starts again instead of coming from the cache).
  """
  example_gen, statistics_gen = ingestion_nodes(config)
  schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                        infer_feature_shape=True)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  anomaly_gate = AnomalyGate(anomalies=example_validator.outputs["anomalies"])
  # The train statistics of every earlier span (newest of each): the drift gate's baselines.
  span_statistics = tfx.dsl.Resolver(
      strategy_class=LatestStatisticsPerSpanStrategy,
      statistics=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ExampleStatistics,
                                 producer_component_id=statistics_gen.id,
                                 output_key="statistics"),
      # This run's span, from its Examples: a second input from StatisticsGen's own output would
      # make TFX 1.16's input graph fail to resolve.
      current=example_gen.outputs["examples"],
  ).with_id(SPAN_STATISTICS_RESOLVER_ID)
  drift_gate = DriftGate(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"],
      drift_config=config.drift,
      baseline_statistics=None if standard_resolvers_only else span_statistics.outputs["statistics"])

  # Training reads the last `window_spans` spans; statistics, validation and the Evaluator read
  # the new span (whose eval part is the fixed MNIST test set).
  window = windows.training_window(example_gen, config.train.window_spans)
  extended_resolvers = [span_statistics, window]
  transform = tfx.components.Transform(
      examples=(example_gen.outputs["examples"] if standard_resolvers_only
                else window.outputs["examples"]),
      schema=schema_gen.outputs["schema"], preprocessing_fn=PREPROCESSING_FN)
  transform.add_upstream_node(anomaly_gate)
  transform.add_upstream_node(drift_gate)

  pipeline_root = _path(config.pipeline_root)

  # The base model (resolvers.py): the diffusion Trainer's warm start and the Evaluator's
  # baseline. Only diffusion models are ever blessed, so the classifier's Models never resolve.
  model_resolver = tfx.dsl.Resolver(
      strategy_class=resolvers.BaseModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
      examples=transform.outputs["transformed_examples"],
  ).with_id(RESOLVER_ID)
  if standard_resolvers_only:
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(RESOLVER_ID)

  def trainer(run_fn: str, num_steps: int, custom_config: dict,
              base_model=None) -> tfx.components.Trainer:
    # Both Trainers read the Transform's output; they differ in run_fn, steps and settings.
    return tfx.components.Trainer(
        run_fn=run_fn,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        base_model=base_model,
        train_args=tfx.proto.TrainArgs(num_steps=num_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=0),
        custom_config=custom_config)

  diffusion_trainer = trainer(
      DIFFUSION_RUN_FN, config.train.train_steps,
      train_lib.trainer_custom_config(
          config, train_lib.DIFFUSION_TRAINER_FIELDS,
          checkpoint_root=os.path.join(pipeline_root, "checkpoints")),
      base_model=model_resolver.outputs["model"] if config.train.warm_start else None,
  ).with_id(DIFFUSION_TRAINER_ID)
  classifier_trainer = trainer(
      CLASSIFIER_RUN_FN, config.classifier.train_steps,
      train_lib.trainer_custom_config(config, train_lib.CLASSIFIER_TRAINER_FIELDS),
  ).with_id(CLASSIFIER_TRAINER_ID)

  eval_example_gen = None
  if config.data.eval_span is not None:
    eval_example_gen = MnistExampleGen(
        data_dir=_path(config.data.data_dir), source=config.data.source,
        span=config.data.eval_span, max_train_examples=config.data.max_train_examples,
        max_eval_examples=config.data.max_eval_examples).with_id(EVAL_EXAMPLE_GEN_ID)
  evaluator = DiffusionEvaluator(
      examples=(eval_example_gen or example_gen).outputs["examples"],
      model=diffusion_trainer.outputs["model"],
      classifier_model=classifier_trainer.outputs["model"],
      baseline_model=model_resolver.outputs["model"],
      eval_config=config.eval)
  # TF Serving's view of the candidate (TFX's InfraValidator without Docker): loaded in a fresh
  # process, its warm-up and one request per signature replayed; the Pusher's infra_blessing.
  servability_gate = ServabilityGate(
      model=diffusion_trainer.outputs["model"],
      timeout_seconds=config.serving.servability_timeout_s).with_id(SERVABILITY_GATE_ID)
  pusher = AtomicPusher(
      model=diffusion_trainer.outputs["model"],
      model_blessing=evaluator.outputs["blessing"],
      infra_blessing=servability_gate.outputs["blessing"],
      serving_dir=_path(config.serving_dir),
      keep_versions=config.serving.keep_versions,
  ).with_id(PUSHER_ID)

  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=pipeline_root,
      components=[example_gen, *([eval_example_gen] if eval_example_gen else []),
                  statistics_gen, schema_gen, example_validator, anomaly_gate,
                  *([] if standard_resolvers_only else extended_resolvers), drift_gate,
                  transform, diffusion_trainer, classifier_trainer, model_resolver,
                  servability_gate, evaluator, pusher],
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata.connection_config(config),
      beam_pipeline_args=list(beam_pipeline_args if beam_pipeline_args is not None
                              else config.beam_pipeline_args),
  )
