"""Tiny data roots of spans cut from the embedded MNIST, and a component that records the Examples
a channel resolves to (its inputs are in ML Metadata)."""

import os
from typing import Dict, List, Sequence

from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.orchestration import metadata
from tfx.types import standard_artifacts

from components.mnist_example_gen import idx
from core import config
from pipeline import spans

TRAIN_PER_SPAN = 64
EVAL_PER_SPAN = 32


def tiny_spans(directory: str, num_spans: int) -> List[str]:
  """Splits the first num_spans * 64 embedded MNIST train images into spans 1..num_spans of 64,
  each with the first 32 test images, in `directory`; returns the span folders."""
  return spans.split(config.EMBEDDED_MNIST_DIR, directory, num_spans,
                     max_train_examples=num_spans * TRAIN_PER_SPAN,
                     max_eval_examples=EVAL_PER_SPAN)


def mnist_folder(directory: str, train_start: int, num_train: int = TRAIN_PER_SPAN,
                 num_eval: int = EVAL_PER_SPAN) -> str:
  """Writes a plain MNIST folder (four idx .gz files and SHA256SUMS) holding embedded train images
  [train_start, train_start + num_train) and the first num_eval test images."""
  os.makedirs(directory, exist_ok=True)
  images, labels = idx.load_split(config.EMBEDDED_MNIST_DIR, "train", train_start + num_train)
  names = idx.write_split(directory, "train", images[train_start:], labels[train_start:])
  names += idx.write_split(directory, "t10k",
                           *idx.load_split(config.EMBEDDED_MNIST_DIR, "t10k", num_eval))
  idx.write_checksums(directory, names)
  return directory


# pylint: disable-next=invalid-name
@component
def ExamplesProbe(examples: InputArtifact[List[standard_artifacts.Examples]]):
  """Consumes a channel of Examples and does nothing: the artifacts it got are its ML Metadata
  input events."""
  del examples


def _node_context(store, pipeline_name: str, node_id: str):
  return store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")


def node_executions(metadata_path: str, pipeline_name: str,
                    node_id: str) -> List[metadata_store_pb2.Execution]:
  """The executions of one node, oldest first ([] when it never ran)."""
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
    context = _node_context(m.store, pipeline_name, node_id)
    if context is None:
      return []
    return sorted(m.store.get_executions_by_context(context.id), key=lambda e: e.id)


def input_spans(metadata_path: str, execution_id: int) -> List[Dict[str, int]]:
  """The `span` custom property and artifact id of each input artifact of an execution, by span."""
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
    events = m.store.get_events_by_execution_ids([execution_id])
    ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.INPUT]
    artifacts = m.store.get_artifacts_by_id(ids)
  return sorted(({"span": a.custom_properties["span"].int_value, "id": a.id} for a in artifacts),
                key=lambda entry: (entry["span"], entry["id"]))


def states(executions: Sequence[metadata_store_pb2.Execution]) -> List[str]:
  """The executions' states by name, e.g. ['COMPLETE', 'CACHED']."""
  return [metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in executions]
