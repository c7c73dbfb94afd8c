"""The AtomicPusher's executor called as TFX would, on artifacts with temporary URIs."""

import json
import os
from typing import Optional

from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components.atomic_pusher import executor


def model_blessing(uri: str, blessed: bool = True) -> standard_artifacts.ModelBlessing:
  """A ModelBlessing with the Evaluator's verdict."""
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = uri
  fileio.makedirs(uri)
  blessing.set_int_custom_property("blessed", int(blessed))
  return blessing


def push(model: standard_artifacts.Model, blessing: standard_artifacts.ModelBlessing,
         serving_dir: str, pushed_uri: str, keep_versions: int = 3,
         infra_blessing: Optional[standard_artifacts.InfraBlessing] = None
         ) -> standard_artifacts.PushedModel:
  """Runs the executor's Do() to a filesystem serving dir; returns the PushedModel artifact."""
  pushed = standard_artifacts.PushedModel()
  pushed.uri = pushed_uri
  inputs = {standard_component_specs.MODEL_KEY: [model],
            standard_component_specs.MODEL_BLESSING_KEY: [blessing]}
  if infra_blessing is not None:
    inputs[standard_component_specs.INFRA_BLESSING_KEY] = [infra_blessing]
  destination = tfx.proto.PushDestination(
      filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir))
  executor.Executor().Do(
      inputs, {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
      {standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination),
       standard_component_specs.CUSTOM_CONFIG_KEY: json.dumps(
           {executor.KEEP_VERSIONS_KEY: keep_versions})})
  return pushed
