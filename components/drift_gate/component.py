"""DriftGate: stops the run when a new span's data drifted from the previous span's.

Compares the train split's ExampleStatistics with those of the span before it, using TFDV's
Jensen-Shannon drift comparator on `label` (the digits' mix) and `image` (the pixel values), with
the thresholds of DriftConfig. On drift it raises, so the nodes placed after it (Transform, by
`add_upstream_node`) never run; its ExampleAnomalies holds the measurements and a report either
way. With no statistics of an earlier span (the first span) it passes and says so.

The baseline input takes candidates rather than one artifact: the executor picks the newest
statistics of the largest span below the current one. `LatestStatisticsPerSpanStrategy` resolves
those candidates from MLMD; ExampleStatistics carry a span but no version, which TFX's span
resolver functions (rolling_range, static_range) require, so they resolve nothing here.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.dsl.components.common import resolver
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from components.drift_gate import executor
from core.config import DriftConfig


class DriftGateSpec(types.ComponentSpec):
  """Inputs, output and the one parameter (DriftConfig as JSON) of the DriftGate."""

  PARAMETERS = {
      executor.DRIFT_CONFIG_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {
      executor.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
      executor.BASELINE_STATISTICS_KEY: ChannelParameter(
          type=standard_artifacts.ExampleStatistics, optional=True),
      executor.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
  }
  OUTPUTS = {
      executor.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
  }


class DriftGate(base_component.BaseComponent):
  """Fails the run when label or pixel distributions drift from the previous span's."""

  SPEC_CLASS = DriftGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               statistics: types.BaseChannel,
               schema: types.BaseChannel,
               drift_config: DriftConfig,
               baseline_statistics: Optional[types.BaseChannel] = None):
    """Builds the component.

    Args:
      statistics: StatisticsGen's ExampleStatistics of the span this run processes (its `span`
        property names the span); the 'train' split is compared.
      schema: the Schema whose copy receives the drift comparators.
      drift_config: the Jensen-Shannon thresholds.
      baseline_statistics: candidate ExampleStatistics of earlier spans, usually
        `LatestStatisticsPerSpanStrategy`'s; the newest of the largest span below the current
        one is the baseline. None or no such candidate: the gate passes (first span).
    """
    spec = DriftGateSpec(
        statistics=statistics,
        baseline_statistics=baseline_statistics,
        schema=schema,
        drift_config=drift_config.to_json(),
        anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies),
    )
    super().__init__(spec=spec)


CURRENT_KEY = "current"


class LatestStatisticsPerSpanStrategy(resolver.ResolverStrategy):
  """Resolves the newest artifact of every span in each input channel, sorted by span.

  With a `current` input (any artifacts of this run that carry its span, e.g. its Examples), only
  spans below the current one are kept:
  the candidates then do not depend on whether this run's own statistics were already recorded,
  so a rerun gives the DriftGate the inputs it had and the cache answers it. Never returns None:
  with no artifact yet, a channel resolves empty, which the DriftGate's optional baseline accepts
  (the first span).
  """

  def resolve_artifacts(
      self, store: mlmd.MetadataStore, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    del store  # the candidates come in input_dict
    current = input_dict.get(CURRENT_KEY, [])
    # The largest: under LocalDagRunner `current` is this run's artifact alone; TFX's Airflow
    # drivers resolve it to those of every run, whose largest span is this one's on a schedule.
    below = max((artifact.span for artifact in current), default=None)
    result = {CURRENT_KEY: current} if CURRENT_KEY in input_dict else {}
    for key, artifacts in input_dict.items():
      if key == CURRENT_KEY:
        continue
      if below is not None:
        artifacts = [artifact for artifact in artifacts if artifact.span < below]
      newest: Dict[int, types.Artifact] = {}
      for artifact in artifacts:
        known = newest.get(artifact.span)
        if known is None or _age_key(artifact) > _age_key(known):
          newest[artifact.span] = artifact
      result[key] = [newest[span] for span in sorted(newest)]
    return result


def _age_key(artifact: types.Artifact):
  return artifact.mlmd_artifact.create_time_since_epoch, artifact.id
