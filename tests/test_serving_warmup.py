"""core.warmup: the warm-up TFRecord inside a tiny real export, and replaying it on the model."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import client
from core import warmup


@pytest.fixture(scope="module")
def exported_dir(smoke_export_dir):
  return smoke_export_dir


@pytest.fixture(scope="module")
def warmed_dir(exported_dir, tmp_path_factory):
  """A copy of the export with the default warm-up requests plus an unconditional one."""
  model_dir = str(tmp_path_factory.mktemp("warmed") / "1")
  shutil.copytree(exported_dir, model_dir)
  requests = warmup.default_warmup_requests() + [
      client.build_grpc_request([10, 10], 0.0, 1, 7)]
  warmup.write_warmup_requests(model_dir, requests)
  return model_dir


def _read_logs(model_dir):
  path = os.path.join(model_dir, "assets.extra", "tf_serving_warmup_requests")
  return [prediction_log_pb2.PredictionLog.FromString(record)
          for record in tf.data.TFRecordDataset(path).as_numpy_iterator()]


def test_default_warmup_requests():
  (request,) = warmup.default_warmup_requests()
  assert request.model_spec.name == "mnist_diffusion"
  assert request.model_spec.signature_name == "serving_default"
  inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
  assert inputs["labels"].dtype == np.int32 and inputs["labels"].tolist() == list(range(10))
  assert inputs["guidance_scale"].shape == () and inputs["guidance_scale"] == np.float32(1.5)
  assert inputs["num_steps"] == 2 and inputs["seed"] == 0
  (custom,) = warmup.default_warmup_requests("other", labels=[3], guidance_scale=4.0)
  assert custom.model_spec.name == "other"
  assert tf.make_ndarray(custom.inputs["guidance_scale"]) == np.float32(4.0)


def test_warmup_file_holds_prediction_logs(warmed_dir):
  logs = _read_logs(warmed_dir)
  assert len(logs) == 2
  assert all(log.WhichOneof("log_type") == "predict_log" for log in logs)
  requests = [log.predict_log.request for log in logs]
  assert requests[0] == warmup.default_warmup_requests()[0]
  assert requests[1] == client.build_grpc_request([10, 10], 0.0, 1, 7)
  assert warmup.read_warmup_requests(warmed_dir) == requests


def test_default_write_and_limits(exported_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(exported_dir, model_dir)
  path = warmup.write_warmup_requests(model_dir)
  assert path == os.path.join(model_dir, "assets.extra", "tf_serving_warmup_requests")
  assert warmup.read_warmup_requests(model_dir) == warmup.default_warmup_requests()
  with pytest.raises(ValueError, match="No warm-up requests"):
    warmup.write_warmup_requests(model_dir, [])
  with pytest.raises(ValueError, match="at most 1000"):
    warmup.write_warmup_requests(model_dir, warmup.default_warmup_requests() * 1001)


def test_warmup_requests_replay_on_the_saved_model(warmed_dir):
  # What TF Serving does at load: feed each logged request's tensors to its signature.
  saved_model = tf.saved_model.load(warmed_dir)
  for log in _read_logs(warmed_dir):
    request = log.predict_log.request
    signature = saved_model.signatures[request.model_spec.signature_name]
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    outputs = signature(**{name: tf.constant(value) for name, value in inputs.items()})
    batch_size = len(inputs["labels"])
    assert outputs["images"].dtype == tf.uint8
    assert outputs["images"].shape == (batch_size, 28, 28, 1)
    assert outputs["images_float"].shape == (batch_size, 28, 28, 1)
