"""create_pipeline's graph: what each node reads, for the default, an eval span, and the variant
Kubeflow compiles."""

import dataclasses

from tfx.dsl.components.common import resolver

from core import config as config_lib
from pipeline import definition
from pipeline import resolvers
from pipeline import windows


def _nodes(config, **kwargs):
  return {node.id: node for node in definition.create_pipeline(config, **kwargs).components}


def test_training_reads_the_window_and_the_evaluator_the_new_span():
  nodes = _nodes(config_lib.profile("smoke"))
  assert nodes["Transform"].inputs["examples"].producer_component_id == windows.WINDOW_ID
  assert nodes["DiffusionEvaluator"].inputs["examples"].producer_component_id == "MnistExampleGen"
  assert nodes[definition.DIFFUSION_TRAINER_ID].inputs["base_model"].producer_component_id == (
      definition.RESOLVER_ID)
  assert nodes[definition.RESOLVER_ID].exec_properties[
      resolver.RESOLVER_STRATEGY_CLASS] is resolvers.BaseModelStrategy
  assert definition.EVAL_EXAMPLE_GEN_ID not in nodes


def test_an_eval_span_gets_its_own_example_gen_for_the_evaluator():
  smoke = config_lib.profile("smoke")
  config = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, eval_span=3))
  nodes = _nodes(config)
  eval_gen = nodes[definition.EVAL_EXAMPLE_GEN_ID]
  assert nodes["DiffusionEvaluator"].inputs["examples"].producer_component_id == eval_gen.id
  assert "static_range" in eval_gen.exec_properties["range_config"]
  assert nodes["StatisticsGen"].inputs["examples"].producer_component_id == "MnistExampleGen"


def test_the_pusher_takes_the_servability_gates_infra_blessing():
  smoke = config_lib.profile("smoke")
  config = dataclasses.replace(
      smoke, serving=dataclasses.replace(smoke.serving, servability_timeout_s=42))
  nodes = _nodes(config)
  gate = nodes[definition.SERVABILITY_GATE_ID]
  assert gate.inputs["model"].producer_component_id == definition.DIFFUSION_TRAINER_ID
  assert gate.exec_properties["timeout_seconds"] == 42
  assert nodes[definition.PUSHER_ID].inputs["infra_blessing"].producer_component_id == gate.id
  assert nodes[definition.PUSHER_ID].inputs["model_blessing"].producer_component_id == (
      "DiffusionEvaluator")


def test_cold_start_wires_no_base_model():
  smoke = config_lib.profile("smoke")
  config = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, warm_start=False))
  assert "base_model" not in _nodes(config)[definition.DIFFUSION_TRAINER_ID].inputs


def test_the_kubeflow_variant_has_only_tfx_resolvers():
  nodes = _nodes(config_lib.profile("smoke"), standard_resolvers_only=True)
  assert windows.WINDOW_ID not in nodes
  assert definition.SPAN_STATISTICS_RESOLVER_ID not in nodes
  assert nodes["Transform"].inputs["examples"].producer_component_id == "MnistExampleGen"
  strategy = nodes[definition.RESOLVER_ID].exec_properties[resolver.RESOLVER_STRATEGY_CLASS]
  assert strategy is not resolvers.BaseModelStrategy
