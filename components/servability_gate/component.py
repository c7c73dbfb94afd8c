"""ServabilityGate: TFX's InfraValidator in TFX's own terms, without Docker or Kubernetes.

Takes the Trainer's Model and writes a standard InfraBlessing that the Pusher takes as
`infra_blessing`: blessed when the candidate's Format-Serving SavedModel loads in a fresh process
that imports only TensorFlow, as TF Serving loads it, and answers its warm-up requests and one
request per signature (executor.py). Like InfraValidator it does not read the Evaluator's
blessing: servability is a property of the export, not of its metrics, and the check costs
seconds. The result depends only on the model and the timeout, so a rerun is a cache hit.
"""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.servability_gate import executor


class ServabilityGateSpec(types.ComponentSpec):
  """The candidate Model in, an InfraBlessing out, and the time limit of the check."""

  PARAMETERS = {
      executor.TIMEOUT_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
  }
  OUTPUTS = {
      executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing),
  }


class ServabilityGate(base_component.BaseComponent):
  """Blesses a candidate that TF Serving could load and serve; the Pusher pushes only those."""

  SPEC_CLASS = ServabilityGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, timeout_seconds: int):
    """Builds the component.

    Args:
      model: the Trainer's Model; its Format-Serving directory is what the Pusher would copy.
      timeout_seconds: the limit for loading the model and answering every request
        (`serving.servability_timeout_s`); past it, the candidate is not blessed.
    """
    if timeout_seconds < 1:
      raise ValueError(f"timeout_seconds must be >= 1, got {timeout_seconds}")
    spec = ServabilityGateSpec(
        model=model, timeout_seconds=timeout_seconds,
        blessing=types.Channel(type=standard_artifacts.InfraBlessing))
    super().__init__(spec=spec)
