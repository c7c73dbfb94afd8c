"""BaseModelStrategy on a real ML Metadata store: the latest blessed model, unless it was trained
on this run's examples (then its own base), so reruns with nothing new hit the cache."""

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from pipeline import resolvers


class _Store:
  """An in-memory MLMD store with helpers to record artifacts and Trainer executions."""

  def __init__(self):
    config = metadata_store_pb2.ConnectionConfig()
    config.fake_database.SetInParent()
    self.store = mlmd.MetadataStore(config)
    self.trainer_type = self.store.put_execution_type(
        metadata_store_pb2.ExecutionType(name="Trainer"))
    self.models, self.blessings = [], []

  def _put(self, artifact):
    artifact_type = artifact.artifact_type
    artifact_type.id = self.store.put_artifact_type(artifact_type)
    artifact.type_id = artifact_type.id
    artifact.uri = f"/tmp/{artifact.type_name}/{len(self.models) + len(self.blessings)}"
    [artifact.id] = self.store.put_artifacts([artifact.mlmd_artifact])
    return artifact

  def examples(self):
    return self._put(standard_artifacts.Examples())

  def train(self, examples, base_model=None, blessed=True):
    """A Trainer execution reading `examples` (and `base_model`), producing a model."""
    model = self._put(standard_artifacts.Model())
    execution = metadata_store_pb2.Execution(type_id=self.trainer_type)
    events = []
    for key, artifact in [(resolvers.TRAINER_EXAMPLES_KEY, examples)] + (
        [(resolvers.TRAINER_BASE_MODEL_KEY, base_model)] if base_model else []):
      event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)
      event.path.steps.add().key = key
      events.append((artifact.mlmd_artifact, event))
    output = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
    output.path.steps.add().key = "model"
    events.append((model.mlmd_artifact, output))
    self.store.put_execution(execution, events, contexts=[])
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", int(blessed))
    blessing.set_int_custom_property("current_model_id", model.id)
    self.blessings.append(self._put(blessing))
    self.models.append(model)
    return model

  def resolve(self, examples):
    return resolvers.BaseModelStrategy().resolve_artifacts(self.store, {
        resolvers.MODEL_KEY: list(self.models),
        resolvers.MODEL_BLESSING_KEY: list(self.blessings),
        resolvers.EXAMPLES_KEY: [examples]})


def _ids(result):
  return [a.id for a in result[resolvers.MODEL_KEY]]


def test_no_blessed_model_resolves_to_none():
  store = _Store()
  assert _ids(store.resolve(store.examples())) == []


def test_new_examples_get_the_latest_blessed_model():
  store = _Store()
  first_examples = store.examples()
  first = store.train(first_examples)
  assert _ids(store.resolve(store.examples())) == [first.id]


def test_the_examples_the_latest_model_was_trained_on_get_that_models_own_base():
  store = _Store()
  first_examples, second_examples = store.examples(), store.examples()
  first = store.train(first_examples)  # a cold start
  assert _ids(store.resolve(first_examples)) == []  # as the first Trainer had it
  second = store.train(second_examples, base_model=first)
  assert _ids(store.resolve(second_examples)) == [first.id]  # as the second Trainer had it
  assert _ids(store.resolve(store.examples())) == [second.id]


def test_a_model_that_was_not_blessed_is_never_a_base():
  store = _Store()
  first = store.train(store.examples())
  store.train(store.examples(), base_model=first, blessed=False)
  assert _ids(store.resolve(store.examples())) == [first.id]
