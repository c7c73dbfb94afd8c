"""MnistExampleGen in a one-component pipeline: custom_config arrives, the cache follows data."""

import glob
import hashlib
import os

import numpy as np
import pytest

from components.mnist_example_gen import MnistExampleGen
from components.mnist_example_gen import executor
from components.mnist_example_gen import idx

# TensorFlow after keras_env, which the imports above run.
import tensorflow as tf  # pylint: disable=g-bad-import-order
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.local import local_dag_runner
from tfx.proto import example_gen_pb2
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


def _run_pipeline(root, data_dir):
  """Runs the one-component pipeline; returns the ExampleGen executions recorded so far."""
  example_gen = MnistExampleGen(data_dir=data_dir, max_train_examples=5, max_eval_examples=4)
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
