"""End to end: the smoke profile on a slice of MNIST with LocalDagRunner, run twice.

The first run executes every component and pushes a servable model. The second, with unchanged
inputs, takes every component from the cache and pushes nothing: the base model resolves as it
did for the model already trained on these examples (pipeline/resolvers.py).
"""

import dataclasses
import json
import os

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from tests.support import fresh_process
from core import config as config_lib
from pipeline import definition
from pipeline import run as run_lib

# The whole smoke pipeline, twice: minutes, so the slow tier.
pytestmark = pytest.mark.slow

UPSTREAM_NODES = ("MnistExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                  "AnomalyGate", "DriftGate", "Transform", definition.DIFFUSION_TRAINER_ID,
                  definition.CLASSIFIER_TRAINER_ID)
ALL_NODES = UPSTREAM_NODES + ("DiffusionEvaluator", definition.SERVABILITY_GATE_ID, "Pusher")


def _node_states(config) -> dict:
  """{node id: [execution states, oldest first]} read from the pipeline's ML Metadata."""
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = config.metadata_sqlite
  store = metadata_store.MetadataStore(connection)
  states = {}
  for context in store.get_contexts_by_type("node"):
    node = context.name.split(".", 1)[1]
    executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
    states[node] = [metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in executions]
  return states


@pytest.fixture(scope="module")
def smoke_config(tmp_path_factory):
  root = tmp_path_factory.mktemp("e2e")
  return dataclasses.replace(config_lib.profile("smoke"),
                             pipeline_root=str(root / "pipeline_root"),
                             serving_dir=str(root / "serving_model"))


@pytest.fixture(scope="module")
def first_run(smoke_config):
  tfx.orchestration.LocalDagRunner().run(definition.create_pipeline(smoke_config))
  return _node_states(smoke_config), run_lib.find_outputs(smoke_config)


def test_first_run_executes_every_component_and_pushes(first_run):
  states, outputs = first_run
  for node in ALL_NODES:
    assert states.get(node) == ["COMPLETE"], (node, states.get(node))
  # Resolver nodes too: TFX runs on past a resolver that failed, with its output empty.
  failed = {node: s for node, s in states.items() if "FAILED" in s}
  assert not failed, failed
  assert os.path.isdir(outputs["pushed_model"])
  assert os.path.basename(outputs["pushed_model"]).isdigit()  # <serving_dir>/<version>/
  with open(os.path.join(outputs["evaluation"], "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["blessing"]["blessed"] is True
  assert metrics["candidate"]["denoising"]["psnr"] > 0
  # The same protocol through TFMA (a real exported model: un-clipping draws, several batches).
  tfma_denoising = metrics["candidate"]["tfma_denoising"]
  for key in ("mse", "rmse", "psnr"):
    assert tfma_denoising["overall"][key] == pytest.approx(
        metrics["candidate"]["denoising"][key], rel=1e-5)
  assert os.path.isdir(os.path.join(outputs["evaluation"], "tfma"))
  for name in ("report.md", "sample_grid.png"):
    assert os.path.isfile(os.path.join(outputs["evaluation"], name))


def test_pushed_model_serves_in_a_fresh_process(first_run, tmp_path):
  _, outputs = first_run
  labels = [0, 3, 7, 9]
  result = fresh_process.call_serving_default(outputs["pushed_model"], labels, cwd=str(tmp_path))
  assert result["shape"] == [len(labels), 28, 28, 1]
  assert result["dtype"] == "uint8"
  assert {"serving_default", "denoise"} <= set(result["signatures"])
  assert result["project_modules"] == []
  # Same request, same images: the random ops are stateless, keyed by the seed.
  assert result["checksum"] == result["checksum_again"]


def test_second_run_with_nothing_new_is_served_from_the_cache(first_run, smoke_config):
  _, outputs = first_run
  served_before = sorted(os.listdir(smoke_config.serving_dir))
  tfx.orchestration.LocalDagRunner().run(definition.create_pipeline(smoke_config))
  states = _node_states(smoke_config)
  # The blessed model was trained on these very examples, so the base model resolves as it did
  # (none): the Trainer, the Evaluator and the Pusher get their old inputs, and nothing runs.
  for node in ALL_NODES:
    assert states[node] == ["COMPLETE", "CACHED"], (node, states[node])
  assert sorted(os.listdir(smoke_config.serving_dir)) == served_before
  assert run_lib.find_outputs(smoke_config)["pushed_model"] == outputs["pushed_model"]
