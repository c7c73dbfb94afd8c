"""serving.client: wire formats, CLI validation, and every transport against the tiny real export.

The REST and gRPC transports talk to in-test stand-ins for TF Serving that replay each request on
the exported `serving_default` signature, answering in TF Serving's formats (errors included).
"""

from concurrent import futures
import http.server
import json
import os
import socket
import threading

import grpc
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from core import config
from serving import client
from serving import grid

_SMOKE = config.profile("smoke")


@pytest.fixture(scope="module")
def serving_dir(smoke_serving_dir):
  """The Pusher layout, <serving_dir>/<version>/, holding the tiny smoke-profile sampler."""
  return smoke_serving_dir


@pytest.fixture(scope="module")
def sampler(serving_dir):
  return client.LocalSampler(serving_dir)


@pytest.fixture(scope="module")
def serving_fn(sampler):
  return sampler.signature


def _images(count):
  return np.arange(count * 28 * 28, dtype=np.int64).reshape(count, 28, 28, 1) % 256


# --- REST wire format -----------------------------------------------------------------------------


def test_build_rest_request_is_columnar_with_scalars():
  assert client.build_rest_request([0, 1, 9, 10], 3, 20, 0) == {
      "signature_name": "serving_default",
      "inputs": {"labels": [0, 1, 9, 10], "guidance_scale": 3.0, "num_steps": 20, "seed": 0},
  }
  body = client.build_rest_request(np.array([7], np.int64), np.float32(1.5), np.int64(4), 3)
  # Plain Python types only: numpy scalars would not serialise.
  assert json.loads(json.dumps(body)) == body
  assert type(body["inputs"]["guidance_scale"]) is float


def test_rest_url():
  assert (client.rest_url("localhost", 8501, "mnist_diffusion")
          == "http://localhost:8501/v1/models/mnist_diffusion:predict")
  assert (client.rest_url("h", 1, "m", model_version=3)
          == "http://h:1/v1/models/m/versions/3:predict")


def test_parse_rest_response_columnar_outputs():
  images = _images(2)
  body = json.loads(json.dumps({"outputs": {
      "images": images.tolist(),
      "images_float": (images / 255.0).tolist(),
  }}))
  parsed = client.parse_rest_response(body)
  assert parsed.dtype == np.uint8 and parsed.shape == (2, 28, 28, 1)
  np.testing.assert_array_equal(parsed, images)


def test_parse_rest_response_single_output_and_row_formats():
  images = _images(2)
  np.testing.assert_array_equal(client.parse_rest_response({"outputs": images.tolist()}), images)
  rows = {"predictions": [{"images": image.tolist(), "images_float": (image / 255).tolist()}
                          for image in images]}
  np.testing.assert_array_equal(client.parse_rest_response(rows), images)


def test_parse_rest_response_error_body():
  with pytest.raises(client.ServingError, match="num_steps must be >= 1"):
    client.parse_rest_response({"error": "assertion failed: [num_steps must be >= 1]"})


@pytest.mark.parametrize("body, message", [
    ({"outputs": {"images_float": [[0.5]]}}, "no output 'images'"),
    ({"outputs": {"images": [[1, 2], [3, 4]]}}, "expected images"),
    ({"outputs": {"images": (_images(1) + 0.5).tolist()}}, "not uint8"),
    ({"outputs": {"images": (_images(1) + 256).tolist()}}, "not uint8"),
    ({"model_version": "1"}, "unexpected response keys"),
])
def test_parse_rest_response_rejects_malformed_bodies(body, message):
  with pytest.raises(client.ServingError, match=message):
    client.parse_rest_response(body)


# --- gRPC wire format -----------------------------------------------------------------------------


def test_build_grpc_request_exact():
  request = client.build_grpc_request([3, 1, 10], 3.0, 20, 7)
  assert request.model_spec.name == "mnist_diffusion"
  assert request.model_spec.signature_name == "serving_default"
  assert not request.model_spec.HasField("version")
  assert sorted(request.inputs) == ["guidance_scale", "labels", "num_steps", "seed"]
  expected = {  # name: (dtype, shape, value)
      "labels": (types_pb2.DT_INT32, [3], [3, 1, 10]),
      "guidance_scale": (types_pb2.DT_FLOAT, [], 3.0),
      "num_steps": (types_pb2.DT_INT32, [], 20),
      "seed": (types_pb2.DT_INT32, [], 7),
  }
  for name, (dtype, shape, value) in expected.items():
    tensor = request.inputs[name]
    assert tensor.dtype == dtype, name
    assert [dim.size for dim in tensor.tensor_shape.dim] == shape, name
    assert tf.make_ndarray(tensor).tolist() == value, name


def test_build_grpc_request_model_version_and_name():
  request = client.build_grpc_request([0], 1.0, 1, 0, model_name="other", model_version=4)
  assert request.model_spec.name == "other"
  assert request.model_spec.version.value == 4


def test_parse_grpc_response():
  images = _images(3).astype(np.uint8)
  response = predict_pb2.PredictResponse()
  response.outputs["images"].CopyFrom(tf.make_tensor_proto(images))
  response.outputs["images_float"].CopyFrom(tf.make_tensor_proto(images / np.float32(255)))
  parsed = client.parse_grpc_response(response)
  assert parsed.dtype == np.uint8
  np.testing.assert_array_equal(parsed, images)
  with pytest.raises(client.ServingError, match="no output 'images'"):
    client.parse_grpc_response(predict_pb2.PredictResponse())


def test_parse_grpc_response_in_typed_fields():
  # TF Serving's default serialization (Tensor::AsProtoField): uint8 values in int_val, no bytes.
  images = _images(2).astype(np.uint8)
  response = predict_pb2.PredictResponse()
  tensor = response.outputs["images"]
  tensor.dtype = types_pb2.DT_UINT8
  for size in images.shape:
    tensor.tensor_shape.dim.add().size = size
  tensor.int_val.extend(images.ravel().tolist())
  parsed = client.parse_grpc_response(response)
  assert parsed.dtype == np.uint8
  np.testing.assert_array_equal(parsed, images)


@pytest.mark.parametrize("labels, guidance, steps, seed, message", [
    ([], 1.0, 1, 0, "non-empty"),
    ([[1, 2]], 1.0, 1, 0, "1-D"),
    ([1.5], 1.0, 1, 0, "integers"),
    ([11], 1.0, 1, 0, "0..9"),
    ([-1], 1.0, 1, 0, "0..9"),
    ([1], -0.5, 1, 0, "guidance_scale"),
    ([1], float("nan"), 1, 0, "guidance_scale"),
    ([1], 1.0, 0, 0, "num_steps"),
    ([1], 1.0, 1, 2**31, "seed"),
])
def test_builders_validate_requests(labels, guidance, steps, seed, message):
  with pytest.raises(ValueError, match=message):
    client.build_rest_request(labels, guidance, steps, seed)
  with pytest.raises(ValueError, match=message):
    client.build_grpc_request(labels, guidance, steps, seed)


# --- CLI validation and model resolution ----------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--digits", "12a"], "digits must be a non-empty string of 0-9"),
    (["--digits", ""], "digits must be a non-empty string of 0-9"),
    (["--steps", "0"], "expected a positive whole number, got '0'"),
    (["--steps", "two"], "expected a positive whole number, got 'two'"),
    (["--rest-port", "0"], "expected a positive whole number"),
    (["--guidance", "-1"], "must be finite and >= 0"),
    (["--guidance", "inf"], "must be finite and >= 0"),
    (["--protocol", "http"], "invalid choice"),
    (["--rest-port", "70000"], "at most 65535"),
    (["--seed", str(2**31)], "must fit in 32 bits"),
    (["--timeout", "0"], "must be finite and > 0"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    client.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err


def test_cli_defaults():
  args = client.build_arg_parser().parse_args([])
  assert (args.protocol, args.host, args.rest_port, args.grpc_port) == ("rest", "localhost",
                                                                         8501, 8500)
  assert args.digits == ["0123456789"] and args.model_dir is None
  assert (args.steps, args.guidance) == (config.SamplerConfig().num_steps,
                                         config.SamplerConfig().guidance_scale)


def test_resolve_model_dir_picks_highest_numeric_version(tmp_path):
  for version in ("1", "2", "10", "notaversion", "11"):
    (tmp_path / version).mkdir()
  for version in ("1", "2", "10", "notaversion"):  # "11" holds no SavedModel yet
    (tmp_path / version / "saved_model.pb").touch()
  assert client.resolve_model_dir(str(tmp_path)) == str(tmp_path / "10")
  assert client.resolve_model_dir(str(tmp_path / "2")) == str(tmp_path / "2")
  with pytest.raises(FileNotFoundError):
    client.resolve_model_dir(str(tmp_path / "11"))
  with pytest.raises(FileNotFoundError):
    client.resolve_model_dir(str(tmp_path / "missing"))


def test_make_grid_layout():
  images = np.stack([np.full((28, 28, 1), value, np.uint8) for value in (10, 20, 30)])
  image = np.asarray(grid.make_grid(images, row_lengths=[2, 1], scale=2))
  assert image.shape == (2 * 56, 2 * 56)
  assert image[0, 0] == 10 and image[0, 56] == 20 and image[56, 0] == 30
  assert image[56, 56] == 0  # the short row is padded with background
  with pytest.raises(ValueError):
    grid.make_grid(images, row_lengths=[2, 2])


# --- In process, on the tiny export ---------------------------------------------------------------


def test_local_sampler_generates_uint8_images(sampler, serving_dir):
  assert sampler.model_dir == os.path.join(serving_dir, "1")
  images = sampler.generate([0, 5, 10], 1.5, 2, 0)
  assert images.dtype == np.uint8 and images.shape == (3, 28, 28, 1)
  np.testing.assert_array_equal(sampler.generate([0, 5, 10], 1.5, 2, 0), images)  # seeded


def test_local_sampler_reports_model_limits(sampler):
  with pytest.raises(client.ServingError, match=f"at most {_SMOKE.sampler.max_batch} labels"):
    sampler.generate([1] * (_SMOKE.sampler.max_batch + 1), 1.5, 2, 0)


def test_cli_model_dir_writes_png_grid(serving_dir, sampler, tmp_path, capsys, monkeypatch):
  # Reuses the loaded model (loading takes seconds); the `sampler` fixture covers loading.
  def load(model_dir):
    assert model_dir == serving_dir
    return sampler

  monkeypatch.setattr(client, "LocalSampler", load)
  out = tmp_path / "grids" / "grid.png"
  assert client.main(["--model-dir", serving_dir, "--digits", "012", "98", "--steps", "2",
                      "--guidance", "3", "--seed", "1", "--scale", "2", "--out", str(out)]) == 0
  with Image.open(out) as image:
    assert image.format == "PNG" and image.mode == "L"
    assert image.size == (3 * 28 * 2, 2 * 28 * 2)
  assert "5 images" in capsys.readouterr().out


def test_cli_reports_missing_model_dir(tmp_path, capsys):
  assert client.main(["--model-dir", str(tmp_path / "missing"), "--out",
                      str(tmp_path / "grid.png")]) == 1
  assert "error:" in capsys.readouterr().err
  assert not (tmp_path / "grid.png").exists()


# --- Over the wire, against stand-ins for TF Serving ----------------------------------------------


def _run_signature(serving_fn, inputs):
  """(outputs as numpy, None) or (None, message), as TF Serving would answer."""
  try:
    outputs = serving_fn(**{name: tf.constant(value) for name, value in inputs.items()})
  except tf.errors.InvalidArgumentError as e:
    return None, e.message
  return {name: value.numpy() for name, value in outputs.items()}, None


class _FakeRestHandler(http.server.BaseHTTPRequestHandler):
  """TF Serving's REST predict API: columnar in, columnar out, {"error": ...} with HTTP 400."""

  def do_POST(self):  # noqa: N802  (BaseHTTPRequestHandler's naming)
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    self.server.requests.append((self.path, body))
    dtypes = {"labels": np.int32, "guidance_scale": np.float32, "num_steps": np.int32,
              "seed": np.int32}
    inputs = {name: np.asarray(value, dtypes[name]) for name, value in body["inputs"].items()}
    outputs, error = _run_signature(self.server.serving_fn, inputs)
    status = 400 if error else 200
    reply = {"error": error} if error else {
        "outputs": {name: value.tolist() for name, value in outputs.items()}}
    data = json.dumps(reply).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.fixture
def rest_server(serving_fn):
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeRestHandler)
  server.serving_fn, server.requests = serving_fn, []
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server
  server.shutdown()
  server.server_close()
  thread.join()


class _FakePredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, serving_fn):
    self.serving_fn = serving_fn
    self.requests = []

  def Predict(self, request, context):  # noqa: N802  (the gRPC method's name)
    self.requests.append(request)
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    outputs, error = _run_signature(self.serving_fn, inputs)
    if error:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response


@pytest.fixture
def grpc_server(serving_fn):
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
  service = _FakePredictionService(serving_fn)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
  service.port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  yield service
  server.stop(grace=None)


def test_rest_client_round_trip_and_errors(rest_server, sampler):
  rest = client.RestClient("127.0.0.1", rest_server.server_port, model_version=1)
  images = rest.generate([4, 2], 2.0, 2, 5)
  np.testing.assert_array_equal(images, sampler.generate([4, 2], 2.0, 2, 5))
  path, body = rest_server.requests[-1]
  assert path == "/v1/models/mnist_diffusion/versions/1:predict"
  assert body == client.build_rest_request([4, 2], 2.0, 2, 5)
  with pytest.raises(client.ServingError, match=r"(?s)HTTP 400.*num_steps must be <= 1000"):
    rest.generate([4], 2.0, 1001, 5)


def test_grpc_client_round_trip_and_errors(grpc_server, sampler):
  with client.GrpcClient("127.0.0.1", grpc_server.port, model_name="mnist_diffusion") as stub:
    images = stub.generate([7, 10], 0.0, 2, 3)
    np.testing.assert_array_equal(images, sampler.generate([7, 10], 0.0, 2, 3))
    assert grpc_server.requests[-1] == client.build_grpc_request([7, 10], 0.0, 2, 3)
    with pytest.raises(client.ServingError,
                       match="(?s)INVALID_ARGUMENT.*num_steps must be <= 1000"):
      stub.generate([7], 0.0, 1001, 3)


def test_cli_over_rest_and_grpc(rest_server, grpc_server, tmp_path):
  common = ["--host", "127.0.0.1", "--digits", "31", "--steps", "2"]
  rest_png, grpc_png = str(tmp_path / "rest.png"), str(tmp_path / "grpc.png")
  assert client.main(common + ["--protocol", "rest", "--rest-port", str(rest_server.server_port),
                               "--out", rest_png]) == 0
  assert client.main(common + ["--protocol", "grpc", "--grpc-port", str(grpc_server.port),
                               "--out", grpc_png]) == 0
  with Image.open(rest_png) as rest_image, Image.open(grpc_png) as grpc_image:
    assert rest_image.size == (2 * 28, 28)
    np.testing.assert_array_equal(np.asarray(rest_image), np.asarray(grpc_image))


def test_rest_client_unreachable_server():
  # Bound but never listening: connections to the port are refused.
  with socket.socket() as unused:
    unused.bind(("127.0.0.1", 0))
    rest = client.RestClient("127.0.0.1", unused.getsockname()[1], timeout=5)
    with pytest.raises(client.ServingError, match="Cannot reach TF Serving"):
      rest.generate([1], 1.0, 1, 0)
