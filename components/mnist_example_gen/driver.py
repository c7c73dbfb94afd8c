"""Driver of MnistExampleGen: TFX's FileBasedDriver, with the span checked complete first.

TFX's driver resolves `{SPAN}` in the split patterns (the latest span, or the one a static
RangeConfig names), fingerprints the files and records `span`, `version` and `input_fingerprint`
on the Examples. Before it runs, this driver checks the span: TFX's own errors for a missing span
("Cannot find matching for split train") or a half-written one ("Latest span should be the same
for each split", or a missing file only at read time) name neither the span nor the file. With no
span named, it picks the latest *complete* span, so a span still being copied in is left for the
next run. A plain MNIST folder (span 0) is checked for its four files the same way.

TFX's driver records span and version as *custom* properties only, while the Examples type
declares them as properties and TFX's span resolver functions (`rolling_range`, `LatestSpan`)
and StatisticsGen read those; without them every artifact looks like span 0. This driver sets
both.
"""

from typing import Any, Dict, List

from absl import logging
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.components.example_gen import driver
from tfx.components.example_gen import utils
from tfx.orchestration import data_types
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components.mnist_example_gen import executor
from components.mnist_example_gen import idx


def uses_spans(input_config: example_gen_pb2.Input) -> bool:
  return any(utils.verify_split_pattern_specs(split)[0] for split in input_config.splits)


class Driver(driver.FileBasedDriver):
  """FileBasedDriver that fails early, naming the span and the missing files."""

  def resolve_exec_properties(self, exec_properties: Dict[str, Any],
                              pipeline_info: data_types.PipelineInfo,
                              component_info: data_types.ComponentInfo) -> Dict[str, Any]:
    options = executor.parse_custom_config(
        exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY))
    if options.source == "idx":
      check_input(exec_properties)
    return super().resolve_exec_properties(exec_properties, pipeline_info, component_info)

  def run(self, execution_info: portable_data_types.ExecutionInfo
         ) -> driver_output_pb2.DriverOutput:
    """The driver of the IR-based runners (LocalDagRunner, BeamDagRunner, ...)."""
    result = super().run(execution_info)
    for artifact in result.output_artifacts[standard_component_specs.EXAMPLES_KEY].artifacts:
      set_span_properties(artifact)
    return result

  def _prepare_output_artifacts(self, input_artifacts, output_dict, exec_properties,
                                execution_id, pipeline_info,
                                component_info) -> Dict[str, List[types.Artifact]]:
    """The driver of the legacy launcher (AirflowDagRunner)."""
    outputs = super()._prepare_output_artifacts(input_artifacts, output_dict, exec_properties,
                                                execution_id, pipeline_info, component_info)
    for artifact in outputs[standard_component_specs.EXAMPLES_KEY]:
      set_span_properties(artifact.mlmd_artifact)
    return outputs


def set_span_properties(artifact: metadata_store_pb2.Artifact) -> None:
  """Copies the `span` and `version` custom properties TFX's driver wrote into the properties."""
  for name in (utils.SPAN_PROPERTY_NAME, utils.VERSION_PROPERTY_NAME):
    if name in artifact.custom_properties:
      artifact.properties[name].int_value = artifact.custom_properties[name].int_value


def check_input(exec_properties: Dict[str, Any]) -> None:
  """Checks the idx input that `exec_properties` names; with {SPAN} patterns and no RangeConfig,
  pins the latest complete span as a static RangeConfig for TFX's resolution.

  Raises:
    FileNotFoundError: the span (or plain folder) is absent or lacks files; the message names
      the span and the files.
  """
  input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
  input_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input())
  if not uses_spans(input_config):
    missing = idx.missing_files(input_base)
    if missing:
      raise FileNotFoundError(
          f"{input_base} holds neither span-{{N}}/ folders nor the MNIST files: "
          f"missing {', '.join(missing)}")
    return
  range_config = None
  if exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY):
    range_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.RANGE_CONFIG_KEY], range_config_pb2.RangeConfig())
  if range_config is not None and range_config.HasField("static_range"):
    idx.check_span(input_base, range_config.static_range.start_span_number)
    return
  span = idx.check_span(input_base)
  newer = [s for s in idx.list_spans(input_base) if s > span]
  if newer:
    logging.warning("MnistExampleGen: reading span %d; spans %s in %s are incomplete", span,
                    newer, input_base)
  exec_properties[standard_component_specs.RANGE_CONFIG_KEY] = proto_utils.proto_to_json(
      range_config_pb2.RangeConfig(
          static_range=range_config_pb2.StaticRange(start_span_number=span,
                                                    end_span_number=span)))
