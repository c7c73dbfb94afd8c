"""The rolling training window: the newest Examples of each of the last K spans.

A Resolver node with its own strategy, not TFX's resolver function `rolling_range`: TFX 1.16's
Airflow runner cannot run resolver functions, while resolver nodes run under every runner here
(LocalDagRunner, BeamDagRunner, Airflow). The node reads every Examples its ExampleGen has
produced (a plain channel naming the producer: an upstream output channel would resolve only this
run's artifact) and runs after that ExampleGen, so it sees this run's span too.
"""

from typing import Dict, List, Optional

import ml_metadata as mlmd
from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.common import resolver

EXAMPLES_KEY = "examples"
WINDOW_SPANS_KEY = "window_spans"
WINDOW_ID = "training_window"


def _newest_per_span(artifacts: List[types.Artifact]) -> Dict[int, types.Artifact]:
  """The newest artifact of each span (a span read again replaces its older Examples)."""
  newest: Dict[int, types.Artifact] = {}
  for artifact in artifacts:
    known = newest.get(artifact.span)
    age = (artifact.mlmd_artifact.create_time_since_epoch, artifact.id)
    if known is None or age > (known.mlmd_artifact.create_time_since_epoch, known.id):
      newest[artifact.span] = artifact
  return newest


class TrainingWindowStrategy(resolver.ResolverStrategy):
  """Resolves each input channel to the newest artifact of each of its last `window_spans` spans,
  in ascending span order (all spans while there are fewer)."""

  def __init__(self, window_spans: int):
    self._window_spans = window_spans

  def resolve_artifacts(self, store: mlmd.MetadataStore,
                        input_dict: Dict[str, List[types.Artifact]]
                        ) -> Optional[Dict[str, List[types.Artifact]]]:
    del store  # the candidates come in input_dict
    result = {}
    for key, artifacts in input_dict.items():
      newest = _newest_per_span(artifacts)
      result[key] = [newest[span] for span in sorted(newest)[-self._window_spans:]]
    return result


def training_window(example_gen, window_spans: int) -> tfx.dsl.Resolver:
  """The window's Resolver node; its `outputs["examples"]` feeds Transform (or any consumer)."""
  if isinstance(window_spans, bool) or not isinstance(window_spans, int) or window_spans < 1:
    raise ValueError(f"window_spans must be an int >= 1, got {window_spans!r}")
  window = tfx.dsl.Resolver(
      strategy_class=TrainingWindowStrategy,
      config={WINDOW_SPANS_KEY: window_spans},
      examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                               producer_component_id=example_gen.id, output_key=EXAMPLES_KEY),
  ).with_id(WINDOW_ID)
  window.add_upstream_node(example_gen)
  return window
