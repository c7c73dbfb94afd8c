"""The data components under each Beam preset of pipeline/beam.py give the same data.

One module-scoped run per preset, on the smoke profile's slice of MNIST:
- in-memory: ExampleGen, StatisticsGen, SchemaGen and Transform (beam.data_pipeline) with
  LocalDagRunner;
- portable: the same nodes against Beam's job server and an EXTERNAL worker pool, both started
  by beam.local_services;
- multi-process (2 worker processes): the whole smoke pipeline through `pipeline.run --runner
  beam` (BeamDagRunner), which must push a model; its data components' outputs are compared too
  (one run instead of two: each multi-process Beam pipeline spends most of its time starting
  workers).
The examples (multisets of serialized records), statistics and transformed examples of each are
compared with the in-memory run's.
"""

import collections
import glob
import os
import socket
import unittest

import pytest

from core import config as config_lib
from pipeline import beam
from pipeline import run as run_lib

SMOKE = config_lib.profile("smoke")
MULTI_PROCESS_WORKERS = 2
# Statistics are sums over records; another bundling changes only their floats' last bits.
STATISTICS_RELATIVE_TOLERANCE = 1e-12


# --- Presets and the CLI: no Beam pipeline runs. ---

def test_presets():
  in_memory = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
  assert beam.preset_args(beam.IN_MEMORY, in_memory) == in_memory
  assert beam.preset_args(beam.MULTI_PROCESS, num_workers=3) == (
      "--direct_running_mode=multi_processing", "--direct_num_workers=3")
  assert beam.preset_args(beam.MULTI_PROCESS) == (
      "--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count()}")
  assert beam.preset_args(beam.PORTABLE, job_endpoint="h:1", worker_pool="w:2") == (
      "--runner=PortableRunner", "--environment_type=EXTERNAL", "--job_endpoint=h:1",
      "--environment_config=w:2")
  with pytest.raises(ValueError):
    beam.preset_args("flink")


def test_arg_value_takes_the_last_value_in_either_form():
  args = ["--runner=DirectRunner", "--job_endpoint", "a:1", "--runner=PortableRunner"]
  assert beam.arg_value(args, "runner") == "PortableRunner"
  assert beam.arg_value(args, "job_endpoint") == "a:1"
  assert beam.arg_value(args, "environment_type") is None


@pytest.mark.parametrize("args", [
    ["--direct_running_mode=multi_processing"],
    # Everything given: nothing to start.
    ["--runner=PortableRunner", "--job_endpoint=h:1", "--environment_type=EXTERNAL",
     "--environment_config=w:2"],
    # A pass-through environment overrides the preset's EXTERNAL one: no local worker pool.
    ["--runner=PortableRunner", "--job_endpoint=h:1", "--environment_type=EXTERNAL",
     "--environment_type=DOCKER"],
])
def test_local_services_start_nothing_when_nothing_is_missing(args):
  with beam.local_services(args) as completed:
    assert completed == args


def test_cli_presets_and_pass_through_args():
  config = run_lib.config_from_args(run_lib.parse_args(
      ["--beam", "multi-process", "--beam-arg=--direct_num_workers=2"]))
  assert config.beam_pipeline_args == (
      "--direct_running_mode=multi_processing", f"--direct_num_workers={os.cpu_count()}",
      "--direct_num_workers=2")
  config = run_lib.config_from_args(run_lib.parse_args(
      ["--beam", "portable", "--job-endpoint", "jobs:8099", "--worker-pool", "workers:50000"]))
  assert beam.arg_value(config.beam_pipeline_args, "job_endpoint") == "jobs:8099"
  assert beam.arg_value(config.beam_pipeline_args, "environment_config") == "workers:50000"
  assert run_lib.config_from_args(run_lib.parse_args([])).beam_pipeline_args == (
      config_lib.profile().beam_pipeline_args)
  with pytest.raises(ValueError, match="--beam portable"):
    run_lib.config_from_args(run_lib.parse_args(["--job-endpoint", "jobs:8099"]))


def test_retrain_shares_the_beam_flags():
  from pipeline import retrain  # pylint: disable=g-import-not-at-top
  args = retrain.build_parser().parse_args(["--beam", "portable"])
  assert beam.arg_value(run_lib.config_from_args(args).beam_pipeline_args,
                        "runner") == beam.PORTABLE_RUNNER


# --- The same data under every runner (slow: each run starts Beam workers). ---

def _listening(address: str) -> bool:
  host, port = address.rsplit(":", 1)
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    return sock.connect_ex((host, int(port))) == 0


def _data_run(tmp_path_factory, preset: str) -> str:
  """Runs the data components under `preset` in a fresh root; returns the root."""
  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx
  root = str(tmp_path_factory.mktemp(preset))
  config = config_lib.profile("smoke", pipeline_root=os.path.join(root, "pipeline_root"))
  args = beam.preset_args(preset, config.beam_pipeline_args)
  with beam.local_services(args, os.path.join(root, "services")) as completed:
    tfx.orchestration.LocalDagRunner().run(beam.data_pipeline(config, completed))
  if preset == beam.PORTABLE:
    # The services ran for the run and are gone after it.
    for flag in ("job_endpoint", "environment_config"):
      address = beam.arg_value(completed, flag)
      assert address and not _listening(address), (flag, address)
  return config.pipeline_root


@pytest.fixture(scope="module")
def in_memory_root(tmp_path_factory):
  return _data_run(tmp_path_factory, beam.IN_MEMORY)


@pytest.fixture(scope="module")
def multi_process_root(tmp_path_factory):
  """The smoke pipeline through the CLI under BeamDagRunner, multi-process preset; its root."""
  root = tmp_path_factory.mktemp(beam.MULTI_PROCESS)
  config = config_lib.profile("smoke", pipeline_root=str(root / "pipeline_root"),
                              serving_dir=str(root / "serving_model"))
  exit_code = run_lib.main([
      "--profile", "smoke", "--pipeline-root", config.pipeline_root,
      "--serving-dir", config.serving_dir, "--runner", "beam", "--beam", beam.MULTI_PROCESS,
      f"--beam-arg=--direct_num_workers={MULTI_PROCESS_WORKERS}"])
  assert exit_code == 0
  return config


@pytest.fixture(scope="module")
def portable_root(tmp_path_factory):
  return _data_run(tmp_path_factory, beam.PORTABLE)


def _artifact(root: str, component: str, key: str) -> str:
  (uri,) = glob.glob(os.path.join(root, component, key, "*"))
  return uri


def _records(uri: str, canonical: bool = False) -> dict:
  """{split: multiset of serialized records}; `canonical`: tf.train.Examples re-serialized
  deterministically (a proto map's wire order may differ between processes)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  splits = {}
  for split_dir in sorted(glob.glob(os.path.join(uri, "Split-*"))):
    files = sorted(glob.glob(os.path.join(split_dir, "*")))
    records = (record.numpy() for record in tf.data.TFRecordDataset(files, "GZIP"))
    if canonical:
      records = (tf.train.Example.FromString(r).SerializeToString(deterministic=True)
                 for r in records)
    splits[os.path.basename(split_dir)] = collections.Counter(records)
  return splits


def _statistics(uri: str) -> dict:
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
  splits = {}
  for path in sorted(glob.glob(os.path.join(uri, "Split-*", "FeatureStats.pb"))):
    with open(path, "rb") as f:
      splits[os.path.basename(os.path.dirname(path))] = (
          statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read()))
  return splits


def _assert_same_data(expected_root: str, actual_root: str) -> None:
  from tensorflow.python.util.protobuf import compare  # pylint: disable=g-import-not-at-top
  expected = _records(_artifact(expected_root, "MnistExampleGen", "examples"))
  assert {split: sum(c.values()) for split, c in expected.items()} == {
      "Split-eval": SMOKE.data.max_eval_examples, "Split-train": SMOKE.data.max_train_examples}
  assert _records(_artifact(actual_root, "MnistExampleGen", "examples")) == expected

  expected_statistics = _statistics(_artifact(expected_root, "StatisticsGen", "statistics"))
  actual_statistics = _statistics(_artifact(actual_root, "StatisticsGen", "statistics"))
  assert sorted(actual_statistics) == sorted(expected_statistics) == ["Split-eval", "Split-train"]
  for split, statistics in expected_statistics.items():
    compare.assertProtoEqual(unittest.TestCase(), statistics, actual_statistics[split],
                             relative_tolerance=STATISTICS_RELATIVE_TOLERANCE)

  expected_transformed = _records(
      _artifact(expected_root, "Transform", "transformed_examples"), canonical=True)
  assert _records(_artifact(actual_root, "Transform", "transformed_examples"),
                  canonical=True) == expected_transformed


@pytest.mark.slow
def test_smoke_pipeline_under_beam_dag_runner_multi_process_pushes(multi_process_root):
  outputs = run_lib.find_outputs(multi_process_root)
  assert os.path.basename(outputs["pushed_model"]).isdigit()  # <serving_dir>/<version>/


@pytest.mark.slow
def test_multi_process_gives_the_same_data(in_memory_root, multi_process_root):
  _assert_same_data(in_memory_root, multi_process_root.pipeline_root)


@pytest.mark.slow
def test_portable_gives_the_same_data(in_memory_root, portable_root):
  _assert_same_data(in_memory_root, portable_root)


@pytest.mark.slow
def test_local_services_are_stopped_on_error(tmp_path):
  args = beam.preset_args(beam.PORTABLE)
  with pytest.raises(RuntimeError, match="the run failed"):
    with beam.local_services(args, str(tmp_path)) as completed:
      addresses = [beam.arg_value(completed, "job_endpoint"),
                   beam.arg_value(completed, "environment_config")]
      assert all(_listening(address) for address in addresses)
      raise RuntimeError("the run failed")
  assert not any(_listening(address) for address in addresses)

