"""Client of the served diffusion sampler: TF Serving (REST or gRPC), or the SavedModel in process.

Library:
  build_rest_request / parse_rest_response, build_grpc_request / parse_grpc_response: the wire
  formats of the `serving_default` signature; RestClient, GrpcClient and LocalSampler share
  `generate(labels, guidance_scale, num_steps, seed) -> uint8 [N, 28, 28, 1]`.
CLI:
  python -m serving.client --protocol rest --host localhost --rest-port 8501 \
      --model-name mnist_diffusion --digits 0123456789 --guidance 3 --steps 20 --seed 0 \
      --out grid.png
  python -m serving.client --model-dir runs/serving_model --digits 0123456789 9876543210 \
      --out grid.png
Each `--digits` string is one row of the grid; all rows go in one request, so they share the seed.
"""

import argparse
import json
import math
import sys
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from core.config import IMAGE_SIZE, SamplerConfig
from core.serving_contract import (DEFAULT_MODEL_NAME, GUIDANCE_SCALE, IMAGE_SHAPE, IMAGES_OUTPUT,
                                   INT32_MAX, INT32_MIN, LABELS, NUM_STEPS, SEED,
                                   SERVING_SIGNATURE, build_grpc_request, build_rest_request,
                                   resolve_model_dir, validate_request)
from serving import grid

DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500
DEFAULT_TIMEOUT_S = 60.0
# A full batch of outputs is about 1 MB; leave room for servers configured with larger batches.
_GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ServingError(RuntimeError):
  """The server (or the local SavedModel) rejected a request or could not be reached."""


def _as_images(value: Any, source: str) -> np.ndarray:
  """Checks that `value` holds uint8-valued images [N, 28, 28, 1] and returns them as uint8."""
  try:
    array = np.asarray(value)
  except ValueError as e:  # ragged nested lists
    raise ServingError(f"{source}: malformed images: {e}") from e
  if array.ndim != 4 or array.shape[1:] != IMAGE_SHAPE:
    raise ServingError(f"{source}: expected images [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1], "
                       f"got shape {array.shape}")
  if array.dtype != np.uint8:
    if (not np.issubdtype(array.dtype, np.number) or np.any(array != np.round(array))
        or array.min(initial=0) < 0 or array.max(initial=0) > 255):
      raise ServingError(f"{source}: images are not uint8 pixel values (dtype {array.dtype})")
    array = array.astype(np.uint8)
  return array


# REST ---------------------------------------------------------------------------------------------


def rest_url(host: str, port: int, model_name: str, model_version: Optional[int] = None) -> str:
  """TF Serving's predict URL, pinned to `model_version` when given."""
  version = f"/versions/{model_version}" if model_version is not None else ""
  return f"http://{host}:{port}/v1/models/{model_name}{version}:predict"


def parse_rest_response(body: Dict[str, Any], output_name: str = IMAGES_OUTPUT) -> np.ndarray:
  """uint8 images [N, 28, 28, 1] from a predict response body; raises ServingError on `error`.

  Columnar responses carry {"outputs": {name: value, ...}} (or the bare value for a signature with
  one output); row responses carry {"predictions": [{name: value, ...}, ...]}.
  """
  if not isinstance(body, dict):
    raise ServingError(f"TF Serving REST: expected a JSON object, got {type(body).__name__}")
  if "error" in body:
    raise ServingError(f"TF Serving REST error: {body['error']}")
  if "outputs" in body:
    outputs = body["outputs"]
    if isinstance(outputs, dict):
      if output_name not in outputs:
        raise ServingError(f"TF Serving REST: no output {output_name!r} in the response "
                           f"(outputs: {sorted(outputs)})")
      return _as_images(outputs[output_name], "TF Serving REST")
    return _as_images(outputs, "TF Serving REST")
  if "predictions" in body:
    predictions = body["predictions"]
    if predictions and all(isinstance(row, dict) for row in predictions):
      if any(output_name not in row for row in predictions):
        raise ServingError(f"TF Serving REST: no output {output_name!r} in the predictions")
      predictions = [row[output_name] for row in predictions]
    return _as_images(predictions, "TF Serving REST")
  raise ServingError(f"TF Serving REST: unexpected response keys {sorted(body)}")


def _error_message(raw: bytes) -> str:
  """The `error` of a TF Serving error body, or the raw text when it is not one."""
  text = raw.decode("utf-8", errors="replace")
  try:
    return str(json.loads(text)["error"])
  except (ValueError, KeyError, TypeError):
    return text.strip() or "(empty body)"


class RestClient:
  """TF Serving's REST API (default port 8501), through the standard library only."""

  def __init__(self, host: str = "localhost", port: int = DEFAULT_REST_PORT,
               model_name: str = DEFAULT_MODEL_NAME, model_version: Optional[int] = None,
               timeout: float = DEFAULT_TIMEOUT_S):
    self.url = rest_url(host, port, model_name, model_version)
    self.timeout = timeout

  def predict(self, body: Dict[str, Any]) -> Dict[str, Any]:
    """POSTs a request body and returns the decoded response body."""
    request = urllib.request.Request(
        self.url, data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:  # 4xx/5xx: TF Serving explains in {"error": ...}
      raise ServingError(f"TF Serving REST error (HTTP {e.code}) from {self.url}: "
                         f"{_error_message(e.read())}") from e
    except urllib.error.URLError as e:
      raise ServingError(f"Cannot reach TF Serving at {self.url}: {e.reason}") from e
    except (TimeoutError, ValueError) as e:  # timeout mid-read, or a body that is not JSON
      raise ServingError(f"Bad response from {self.url}: {e}") from e

  def generate(self, labels, guidance_scale: float, num_steps: int, seed: int) -> np.ndarray:
    return parse_rest_response(self.predict(
        build_rest_request(labels, guidance_scale, num_steps, seed)))


# gRPC ---------------------------------------------------------------------------------------------


def parse_grpc_response(response: predict_pb2.PredictResponse,
                        output_name: str = IMAGES_OUTPUT) -> np.ndarray:
  """uint8 images [N, 28, 28, 1] from a PredictResponse."""
  if output_name not in response.outputs:
    raise ServingError(f"TF Serving gRPC: no output {output_name!r} in the response "
                       f"(outputs: {sorted(response.outputs)})")
  return _as_images(tf.make_ndarray(response.outputs[output_name]), "TF Serving gRPC")


class GrpcClient:
  """TF Serving's gRPC PredictionService (default port 8500). Close it, or use it as a context."""

  def __init__(self, host: str = "localhost", port: int = DEFAULT_GRPC_PORT,
               model_name: str = DEFAULT_MODEL_NAME, model_version: Optional[int] = None,
               timeout: float = DEFAULT_TIMEOUT_S):
    self.target = f"{host}:{port}"
    self.model_name = model_name
    self.model_version = model_version
    self.timeout = timeout
    self._channel = grpc.insecure_channel(self.target, options=[
        ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES)])
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

  def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    try:
      return self._stub.Predict(request, timeout=self.timeout)
    except grpc.RpcError as e:
      raise ServingError(f"TF Serving gRPC error from {self.target}: "
                         f"{e.code().name}: {e.details()}") from e

  def generate(self, labels, guidance_scale: float, num_steps: int, seed: int) -> np.ndarray:
    return parse_grpc_response(self.predict(build_grpc_request(
        labels, guidance_scale, num_steps, seed, self.model_name, self.model_version)))

  def close(self) -> None:
    self._channel.close()

  def __enter__(self) -> "GrpcClient":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


# In process ---------------------------------------------------------------------------------------


class LocalSampler:
  """The served SavedModel, loaded once and called in process: TF Serving's answers without it."""

  def __init__(self, model_dir: str):
    self.model_dir = resolve_model_dir(model_dir)
    # Keep the loaded object: the signature function only holds weak references to its variables.
    self._saved_model = tf.saved_model.load(self.model_dir)
    # The raw signature, for callers that want every output (images_float) or no validation.
    self.signature = self._saved_model.signatures[SERVING_SIGNATURE]

  def generate(self, labels, guidance_scale: float, num_steps: int, seed: int) -> np.ndarray:
    labels = validate_request(labels, guidance_scale, num_steps, seed)
    try:
      outputs = self.signature(
          **{LABELS: tf.constant(labels, tf.int32),
             GUIDANCE_SCALE: tf.constant(float(guidance_scale), tf.float32),
             NUM_STEPS: tf.constant(int(num_steps), tf.int32),
             SEED: tf.constant(int(seed), tf.int32)})
    except tf.errors.InvalidArgumentError as e:  # the model's own limits (max batch, max steps)
      raise ServingError(f"The model rejected the request: {e.message}") from e
    return _as_images(outputs[IMAGES_OUTPUT].numpy(), self.model_dir)


# CLI ----------------------------------------------------------------------------------------------


def _digit_string(text: str) -> str:
  if not text or not all("0" <= character <= "9" for character in text):
    raise argparse.ArgumentTypeError(f"digits must be a non-empty string of 0-9, got {text!r}")
  return text


def positive_int(text: str) -> int:
  """A whole number >= 1 from the command line (also serving.reexport's)."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
  return value


def _port(text: str) -> int:
  value = positive_int(text)
  if value > 65535:
    raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
  return value


def _guidance(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
  if not math.isfinite(value) or value < 0:
    raise argparse.ArgumentTypeError(f"must be finite and >= 0, got {text}")
  return value


def _timeout(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
  if not math.isfinite(value) or value <= 0:
    raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text}")
  return value


def _seed(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if not INT32_MIN <= value <= INT32_MAX:
    raise argparse.ArgumentTypeError(f"must fit in 32 bits, got {value}")
  return value


def build_arg_parser() -> argparse.ArgumentParser:
  defaults = SamplerConfig()
  parser = argparse.ArgumentParser(
      prog="python -m serving.client",
      description="Generates MNIST digits with the served diffusion model and writes a PNG grid.")
  source = parser.add_argument_group("model (a TF Serving server, or --model-dir in process)")
  source.add_argument("--model-dir", help="SavedModel, or serving dir (its highest numeric "
                      "version is used): run in process, no server; the server flags are ignored")
  source.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
  source.add_argument("--host", default="localhost")
  source.add_argument("--rest-port", type=_port, default=DEFAULT_REST_PORT)
  source.add_argument("--grpc-port", type=_port, default=DEFAULT_GRPC_PORT)
  source.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
  source.add_argument("--model-version", type=positive_int, default=None,
                      help="pin a version (default: the server's latest)")
  source.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT_S, help="seconds")
  request = parser.add_argument_group("request")
  request.add_argument("--digits", nargs="+", type=_digit_string, default=["0123456789"],
                       help="one or more digit strings, one grid row each (default 0123456789)")
  request.add_argument("--guidance", type=_guidance, default=defaults.guidance_scale,
                       help="0 unconditional, 1 conditional, >1 guided (default %(default)s)")
  request.add_argument("--steps", type=positive_int, default=defaults.num_steps,
                       help="sampler steps (default %(default)s)")
  request.add_argument("--seed", type=_seed, default=0)
  output = parser.add_argument_group("output")
  output.add_argument("--out", default="grid.png", help="PNG path (default %(default)s)")
  output.add_argument("--scale", type=positive_int, default=1, help="integer upscale factor")
  return parser


def make_client(args: argparse.Namespace):
  """The client the parsed flags ask for: LocalSampler, RestClient or GrpcClient."""
  if args.model_dir:
    return LocalSampler(args.model_dir)
  if args.protocol == "grpc":
    return GrpcClient(args.host, args.grpc_port, args.model_name, args.model_version, args.timeout)
  return RestClient(args.host, args.rest_port, args.model_name, args.model_version, args.timeout)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_arg_parser().parse_args(argv)
  labels: List[int] = [int(digit) for row in args.digits for digit in row]
  try:
    client = make_client(args)
    try:
      images = client.generate(labels, args.guidance, args.steps, args.seed)
    finally:
      if isinstance(client, GrpcClient):
        client.close()
  except (ServingError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  grid_image = grid.save_grid(args.out, images, [len(row) for row in args.digits], args.scale)
  print(f"Wrote {args.out}: {len(images)} images, {grid_image.width}x{grid_image.height} px")
  return 0


if __name__ == "__main__":
  sys.exit(main())
