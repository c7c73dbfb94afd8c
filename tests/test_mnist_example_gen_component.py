"""MnistExampleGen in a one-component pipeline: custom_config arrives, the cache follows data."""

import glob
import hashlib
import os

import numpy as np
import pytest

from components.mnist_example_gen import MnistExampleGen
from components.mnist_example_gen import driver
from components.mnist_example_gen import executor
from components.mnist_example_gen import idx
from tests.support import spans as span_support

# TensorFlow after core.environment, which the imports above run.
import tensorflow as tf  # pylint: disable=g-bad-import-order
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.orchestration import data_types
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.local import local_dag_runner
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import proto_utils


def _write_mnist(directory, num_train, num_test):
  sums = []
  for prefix, count, seed in (("train", num_train, 1), ("t10k", num_test, 2)):
    rng = np.random.default_rng(seed)
    arrays = {"images-idx3": rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
              "labels-idx1": rng.integers(0, 10, (count,), dtype=np.uint8)}
    for kind, array in arrays.items():
      name = f"{prefix}-{kind}-ubyte.gz"
      idx.write_idx(os.path.join(directory, name), array)
      with open(os.path.join(directory, name), "rb") as f:
        sums.append(f"{hashlib.sha256(f.read()).hexdigest()}  {name}\n")
  with open(os.path.join(directory, idx.CHECKSUMS_FILENAME), "w") as f:
    f.writelines(sums)


def _input_patterns(example_gen):
  # The spec keeps proto parameters as JSON text, which is also what the executor receives.
  input_config = proto_utils.json_to_proto(
      example_gen.exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
      example_gen_pb2.Input())
  return [(split.name, split.pattern) for split in input_config.splits]


def test_component_config():
  example_gen = MnistExampleGen(data_dir="/data/mnist", max_train_examples=512)
  properties = example_gen.exec_properties
  assert properties[standard_component_specs.INPUT_BASE_KEY] == "/data/mnist"
  assert _input_patterns(example_gen) == [("train", "train-*"), ("eval", "t10k-*")]
  assert executor.parse_custom_config(
      properties[standard_component_specs.CUSTOM_CONFIG_KEY]) == executor.Options(
          max_train_examples=512)
  tfds_gen = MnistExampleGen(data_dir="/data/tfds", source="tfds")
  assert _input_patterns(tfds_gen) == list(executor.INPUT_PATTERNS["tfds"].items())
  with pytest.raises(ValueError, match="source"):
    MnistExampleGen(data_dir="/data/mnist", source="csv")


def _run_pipeline(root, data_dir, example_gen=None):
  """Runs the one-component pipeline; returns the ExampleGen executions recorded so far."""
  example_gen = example_gen or MnistExampleGen(data_dir=data_dir, max_train_examples=5,
                                               max_eval_examples=4)
  metadata_path = os.path.join(root, "metadata.sqlite")
  local_dag_runner.LocalDagRunner().run(tfx_pipeline.Pipeline(
      pipeline_name="mnist-example-gen-test",
      pipeline_root=os.path.join(root, "pipeline_root"),
      components=[example_gen],
      enable_cache=True,
      metadata_connection_config=metadata.sqlite_metadata_connection_config(metadata_path),
      beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
    executions = sorted(m.store.get_executions(), key=lambda e: e.id)
    artifacts = m.store.get_artifacts_by_type("Examples")
  return executions, artifacts


def _count_records(examples_uri, split):
  files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz"))
  return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


@pytest.mark.slow
def test_pipeline_runs_then_hits_cache_then_sees_changed_data(tmp_path):
  data_dir = str(tmp_path / "mnist")
  os.makedirs(data_dir)
  _write_mnist(data_dir, num_train=8, num_test=6)
  root = str(tmp_path)
  complete = metadata_store_pb2.Execution.COMPLETE
  cached = metadata_store_pb2.Execution.CACHED

  executions, artifacts = _run_pipeline(root, data_dir)
  assert [e.last_known_state for e in executions] == [complete]
  assert len(artifacts) == 1
  # custom_config went through the orchestrator: the slice limits hold.
  assert _count_records(artifacts[0].uri, "train") == 5
  assert _count_records(artifacts[0].uri, "eval") == 4

  executions, artifacts = _run_pipeline(root, data_dir)
  assert [e.last_known_state for e in executions] == [complete, cached]
  assert len(artifacts) == 1

  # New data (different size, so the fingerprint differs even within the same mtime second).
  _write_mnist(data_dir, num_train=9, num_test=6)
  executions, artifacts = _run_pipeline(root, data_dir)
  assert [e.last_known_state for e in executions] == [complete, cached, complete]
  assert len(artifacts) == 2


def _range_config(example_gen):
  text = example_gen.exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY)
  return proto_utils.json_to_proto(text, range_config_pb2.RangeConfig()) if text else None


@pytest.mark.slow
def test_component_reads_a_data_root_of_spans(tmp_path):
  root = str(tmp_path / "root")
  span_support.tiny_spans(root, 2)
  latest = MnistExampleGen(data_dir=root)
  assert _input_patterns(latest) == [("train", "span-{SPAN}/train-*"),
                                     ("eval", "span-{SPAN}/t10k-*")]
  assert _range_config(latest) is None  # TFX's default: the latest span
  pinned = MnistExampleGen(data_dir=root, span=1)
  assert _input_patterns(pinned) == _input_patterns(latest)
  assert _range_config(pinned) == range_config_pb2.RangeConfig(
      static_range=range_config_pb2.StaticRange(start_span_number=1, end_span_number=1))
  # A span named on a folder without spans (yet) still reads span-{SPAN}/: the driver says
  # the span is missing.
  assert _input_patterns(MnistExampleGen(data_dir=str(tmp_path / "none"), span=3)) == \
      _input_patterns(latest)
  with pytest.raises(ValueError, match="span must be None or an int >= 0"):
    MnistExampleGen(data_dir=root, span=-1)
  with pytest.raises(ValueError, match="span applies to source 'idx' only"):
    MnistExampleGen(data_dir=root, source="tfds", span=1)


def _resolve(example_gen):
  """What the driver makes of the component's exec properties (protos as JSON text, as the
  orchestrator hands them over) before the executor runs."""
  return driver.Driver(metadata_handle=None).resolve_exec_properties(
      dict(example_gen.exec_properties), None, None)


def test_driver_resolves_the_latest_complete_span(tmp_path):
  root = str(tmp_path / "root")
  span_support.tiny_spans(root, 3)
  resolved = _resolve(MnistExampleGen(data_dir=root))
  assert resolved["span"] == 3 and resolved["version"] is None
  assert _input_patterns_of(resolved) == [("train", "span-3/train-*"), ("eval", "span-3/t10k-*")]
  assert resolved["input_fingerprint"].startswith("split:train,num_files:2,")
  # A span still being copied in (its test labels not there yet) is left for the next run.
  os.remove(os.path.join(root, "span-3", "t10k-labels-idx1-ubyte.gz"))
  assert _resolve(MnistExampleGen(data_dir=root))["span"] == 2
  assert _resolve(MnistExampleGen(data_dir=root, span=1))["span"] == 1


def _input_patterns_of(exec_properties):
  input_config = proto_utils.json_to_proto(
      exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input())
  return [(split.name, split.pattern) for split in input_config.splits]


def test_driver_names_a_missing_or_incomplete_span(tmp_path):
  root = str(tmp_path / "root")
  span_support.tiny_spans(root, 2)
  with pytest.raises(FileNotFoundError,
                     match=r"Span 7 not found: no .*span-7/ \(spans in .*: \[1, 2\]\)"):
    _resolve(MnistExampleGen(data_dir=root, span=7))
  os.remove(os.path.join(root, "span-2", "train-labels-idx1-ubyte.gz"))
  with pytest.raises(FileNotFoundError,
                     match=r"Span 2 in .* is incomplete: missing train-labels-idx1-ubyte\[.gz\]$"):
    _resolve(MnistExampleGen(data_dir=root, span=2))
  os.remove(os.path.join(root, "span-1", "t10k-images-idx3-ubyte.gz"))
  with pytest.raises(FileNotFoundError, match=r"No complete span in .*: span 2 misses .*; span 1 "
                                              r"misses t10k-images-idx3-ubyte\[.gz\]"):
    _resolve(MnistExampleGen(data_dir=root))
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  with pytest.raises(FileNotFoundError,
                     match="holds neither span-{N}/ folders nor the MNIST files"):
    _resolve(MnistExampleGen(data_dir=empty))


def test_driver_sets_span_properties_as_well_as_custom_properties():
  artifact = metadata_store_pb2.Artifact()
  artifact.custom_properties["span"].int_value = 4
  driver.set_span_properties(artifact)
  assert artifact.properties["span"].int_value == 4 and "version" not in artifact.properties
  artifact.custom_properties["version"].int_value = 2
  driver.set_span_properties(artifact)
  assert artifact.properties["version"].int_value == 2


@pytest.mark.slow
def test_legacy_launcher_path_sets_span_properties(tmp_path):
  # AirflowDagRunner's launcher prepares the output artifacts through this method.
  pipeline_info = data_types.PipelineInfo(pipeline_name="p", pipeline_root=str(tmp_path),
                                          run_id="run")
  component_info = data_types.ComponentInfo(component_type="MnistExampleGen",
                                            component_id="MnistExampleGen",
                                            pipeline_info=pipeline_info)
  # pylint: disable-next=protected-access
  outputs = driver.Driver(metadata_handle=None)._prepare_output_artifacts(
      {}, {standard_component_specs.EXAMPLES_KEY: types.Channel(type=standard_artifacts.Examples)},
      {"span": 3, "version": None, "input_fingerprint": "split:train"}, 7, pipeline_info,
      component_info)
  (examples,) = outputs[standard_component_specs.EXAMPLES_KEY]
  assert examples.span == 3 and examples.get_int_custom_property("span") == 3


@pytest.mark.slow
def test_pipeline_records_span_and_fails_on_a_missing_span_before_reading(tmp_path):
  data_root = str(tmp_path / "root")
  span_support.tiny_spans(data_root, 2)
  run_root = str(tmp_path / "run")
  example_gen = MnistExampleGen(data_dir=data_root, span=9)
  with pytest.raises(FileNotFoundError, match="Span 9 not found"):
    _run_pipeline(run_root, data_root, example_gen=example_gen)
  executions, artifacts = _run_pipeline(run_root, data_root)
  assert [e.last_known_state for e in executions][-1] == metadata_store_pb2.Execution.COMPLETE
  # The failed run published nothing.
  assert len(artifacts) == 1
  examples = artifacts[0]
  assert examples.custom_properties["span"].int_value == 2
  assert examples.properties["span"].int_value == 2
  assert "version" not in examples.custom_properties  # the layout has no {VERSION} level
  assert examples.custom_properties["input_fingerprint"].string_value.startswith(
      "split:train,num_files:2,")
  assert _count_records(examples.uri, "train") == 5  # max_train_examples of _run_pipeline
