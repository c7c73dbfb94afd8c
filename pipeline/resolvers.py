"""The base model of a run: what the diffusion Trainer warm-starts from and the Evaluator
compares with.

TFX's LatestBlessedModelStrategy alone would make every rerun train again: after a run blesses
model M, the next run sees M as a new base model even when nothing else changed. This strategy
gives the latest blessed model, unless that model was trained on the very examples this run
trains on; then it gives the base that model itself had (none for a cold start). A rerun with
nothing new so hands the Trainer, the Evaluator and the Pusher the inputs they had before, and
TFX's cache answers all three.
"""

from typing import Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy

MODEL_KEY = "model"
MODEL_BLESSING_KEY = "model_blessing"
EXAMPLES_KEY = "examples"
# The Trainer's input keys (tfx.types.standard_component_specs.TrainerSpec).
TRAINER_EXAMPLES_KEY = "examples"
TRAINER_BASE_MODEL_KEY = "base_model"


def producer_inputs(store: mlmd.MetadataStore, artifact_id: int) -> Dict[str, List[int]]:
  """The input artifact ids, by input key, of the execution that produced `artifact_id`."""
  outputs = [event for event in store.get_events_by_artifact_ids([artifact_id])
             if event.type == metadata_store_pb2.Event.OUTPUT]
  if not outputs:
    return {}
  inputs: Dict[str, List[int]] = {}
  for event in store.get_events_by_execution_ids([outputs[-1].execution_id]):
    if event.type == metadata_store_pb2.Event.INPUT and event.path.steps:
      inputs.setdefault(event.path.steps[0].key, []).append(event.artifact_id)
  return inputs


class BaseModelStrategy(resolver.ResolverStrategy):
  """Resolves `model` (and `model_blessing`) as described in the module docstring; `examples` is
  the run's training examples (the Transform output the Trainer reads), passed through."""

  def resolve_artifacts(self, store: mlmd.MetadataStore,
                        input_dict: Dict[str, List[types.Artifact]]
                        ) -> Optional[Dict[str, List[types.Artifact]]]:
    examples = input_dict[EXAMPLES_KEY]
    latest = latest_blessed_model_strategy.LatestBlessedModelStrategy().resolve_artifacts(
        store, {MODEL_KEY: list(input_dict[MODEL_KEY]),
                MODEL_BLESSING_KEY: list(input_dict[MODEL_BLESSING_KEY])})
    result = {MODEL_KEY: latest[MODEL_KEY], MODEL_BLESSING_KEY: latest[MODEL_BLESSING_KEY],
              EXAMPLES_KEY: examples}
    if not result[MODEL_KEY] or not examples:
      return result
    trained_on = producer_inputs(store, result[MODEL_KEY][0].id)
    if sorted(trained_on.get(TRAINER_EXAMPLES_KEY, [])) != sorted(a.id for a in examples):
      return result
    base_ids = trained_on.get(TRAINER_BASE_MODEL_KEY, [])
    result[MODEL_KEY] = [a for a in input_dict[MODEL_KEY] if a.id in base_ids]
    result[MODEL_BLESSING_KEY] = []
    return result
