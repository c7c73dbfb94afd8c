"""The serving contract: the exported sampler's signatures, how a request is built, the settings
the SavedModel records, and where TF Serving finds a version.

One home for these facts: the exporter (trainer_module/export.py) writes them, the client
(serving/client.py), the warm-up requests (core/warmup.py), the Evaluator and the benchmarks read
them.
"""

import math
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from core.config import IMAGE_SIZE, NULL_LABEL, NUM_CLASSES, SamplerConfig

DEFAULT_MODEL_NAME = "mnist_diffusion"

# serving_default(labels int32 [N], guidance_scale float32 [], num_steps int32 [], seed int32 [])
#   -> images uint8 [N, 28, 28, 1], images_float float32 [N, 28, 28, 1] in [0, 1]
SERVING_SIGNATURE = "serving_default"
LABELS = "labels"
GUIDANCE_SCALE = "guidance_scale"
NUM_STEPS = "num_steps"
SEED = "seed"
IMAGES_OUTPUT = "images"
IMAGES_FLOAT_OUTPUT = "images_float"
# denoise(noisy_images float32 [N, 28, 28, 1] in [0, 1], noise_sigma float32 [])
#   -> denoised_images float32 [N, 28, 28, 1] in [0, 1]
DENOISE_SIGNATURE = "denoise"
NOISY_IMAGES = "noisy_images"
NOISE_SIGMA = "noise_sigma"
DENOISED_IMAGES_OUTPUT = "denoised_images"

IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1

# Requests ----------------------------------------------------------------------------------------


def validate_request(labels, guidance_scale: float, num_steps: int, seed: int) -> np.ndarray:
  """Checks a request client-side (clearer than the graph's InvalidArgument); returns int32 labels.

  The model still enforces its own limits (max batch, max steps), which only it knows.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got {labels.dtype}")
  if labels.min() < 0 or labels.max() > NULL_LABEL:
    raise ValueError(f"labels must be 0..{NUM_CLASSES - 1}, or {NULL_LABEL} for unconditional; "
                     f"got {labels.tolist()}")
  if not math.isfinite(guidance_scale) or guidance_scale < 0:
    raise ValueError(f"guidance_scale must be finite and >= 0, got {guidance_scale}")
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"num_steps must be an integer >= 1, got {num_steps}")
  if int(seed) != seed or not INT32_MIN <= seed <= INT32_MAX:
    raise ValueError(f"seed must be a 32-bit integer, got {seed}")
  return labels.astype(np.int32)


def build_rest_request(labels, guidance_scale: float, num_steps: int, seed: int,
                       signature_name: str = SERVING_SIGNATURE) -> Dict[str, Any]:
  """The JSON body of a predict request in the columnar ("inputs") format.

  Not the row ("instances") format: that one needs every input batched alike, and three of ours
  are scalars.
  """
  labels = validate_request(labels, guidance_scale, num_steps, seed)
  return {
      "signature_name": signature_name,
      "inputs": {
          LABELS: labels.tolist(),
          GUIDANCE_SCALE: float(guidance_scale),
          NUM_STEPS: int(num_steps),
          SEED: int(seed),
      },
  }


def build_grpc_request(labels, guidance_scale: float, num_steps: int, seed: int,
                       model_name: str = DEFAULT_MODEL_NAME,
                       model_version: Optional[int] = None,
                       signature_name: str = SERVING_SIGNATURE) -> predict_pb2.PredictRequest:
  """A PredictRequest with the signature's exact dtypes: labels int32 [N], scalars of shape []."""
  labels = validate_request(labels, guidance_scale, num_steps, seed)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if model_version is not None:
    request.model_spec.version.value = int(model_version)
  inputs = {
      LABELS: tf.make_tensor_proto(labels, dtype=tf.int32, shape=[len(labels)]),
      GUIDANCE_SCALE: tf.make_tensor_proto(float(guidance_scale), dtype=tf.float32, shape=[]),
      NUM_STEPS: tf.make_tensor_proto(int(num_steps), dtype=tf.int32, shape=[]),
      SEED: tf.make_tensor_proto(int(seed), dtype=tf.int32, shape=[]),
  }
  for name, tensor_proto in inputs.items():
    request.inputs[name].CopyFrom(tensor_proto)
  return request


# Settings recorded in the SavedModel --------------------------------------------------------------
# Saved as variables beside the signatures, so a client, the Evaluator and a re-export read the
# defaults and limits a model was exported with from the model itself.


def sampler_variables(sampler: SamplerConfig) -> Dict[str, tf.Variable]:
  """The variables that record `sampler` in an exported SavedModel, by attribute name."""
  max_sigma = float("inf") if sampler.guidance_max_sigma is None else sampler.guidance_max_sigma
  values = {
      "sampler_name": (sampler.sampler, tf.string),
      "default_num_steps": (sampler.num_steps, tf.int32),
      "default_guidance_scale": (sampler.guidance_scale, tf.float32),
      "max_steps": (sampler.max_steps, tf.int32),
      "max_batch": (sampler.max_batch, tf.int32),
      "compute_dtype": (sampler.compute_dtype, tf.string),
      # 0 rows: no limit.
      "max_rows_per_call": (sampler.max_rows_per_call or 0, tf.int32),
      "network_copies": (sampler.network_copies, tf.int32),
      # [min, max] noise levels where guidance above 1 applies (max = inf: no upper bound).
      "guidance_sigma_interval": ([sampler.guidance_min_sigma, max_sigma], tf.float32),
  }
  return {name: tf.Variable(value, trainable=False, dtype=dtype)
          for name, (value, dtype) in values.items()}


def _shortest_decimal(value) -> float:
  # The shortest decimal of a recorded float32: 1.6, not 1.600000023841858.
  return float(str(np.float32(value)))


def recorded_sampler_config(loaded, source: str = "the SavedModel") -> SamplerConfig:
  """The SamplerConfig a loaded sampler SavedModel was exported with (see sampler_variables)."""
  missing = [name for name in sampler_variables(SamplerConfig())
             if not isinstance(getattr(loaded, name, None), tf.Variable)]
  if missing:
    raise ValueError(f"{source} is not a sampler exported by this project: it records no "
                     f"{', '.join(missing)}")

  def read(name):
    return getattr(loaded, name).numpy()

  low, high = (_shortest_decimal(bound) for bound in read("guidance_sigma_interval"))
  return SamplerConfig(
      sampler=read("sampler_name").decode(),
      num_steps=int(read("default_num_steps")),
      guidance_scale=_shortest_decimal(read("default_guidance_scale")),
      guidance_min_sigma=low,
      guidance_max_sigma=None if math.isinf(high) else high,
      max_steps=int(read("max_steps")),
      max_batch=int(read("max_batch")),
      max_rows_per_call=int(read("max_rows_per_call")) or None,
      network_copies=int(read("network_copies")),
      compute_dtype=read("compute_dtype").decode())


# Where TF Serving finds a model -------------------------------------------------------------------
# A serving dir holds one SavedModel per numeric version folder; TF Serving serves the highest.


def is_saved_model_dir(path: str) -> bool:
  return any(tf.io.gfile.exists(f"{path.rstrip('/')}/{name}")
             for name in ("saved_model.pb", "saved_model.pbtxt"))


def numeric_versions(serving_dir: str) -> List[int]:
  """Every numeric version folder under `serving_dir`, complete or not, ascending."""
  if not tf.io.gfile.isdir(serving_dir):
    return []
  names = [name.rstrip("/") for name in tf.io.gfile.listdir(serving_dir)]
  return sorted(int(name) for name in names if name.isdigit())


def latest_version_dir(serving_dir: str) -> Optional[str]:
  """The highest numeric version under `serving_dir` that holds a SavedModel, or None."""
  for version in reversed(numeric_versions(serving_dir)):
    path = f"{serving_dir.rstrip('/')}/{version}"
    if is_saved_model_dir(path):
      return path
  return None


def resolve_model_dir(path: str) -> str:
  """`path` if it is a SavedModel, else its latest version (the Pusher's layout)."""
  if is_saved_model_dir(path):
    return path
  if not tf.io.gfile.isdir(path):
    raise FileNotFoundError(f"No SavedModel or serving directory at {path}")
  latest = latest_version_dir(path)
  if latest is None:
    raise FileNotFoundError(f"{path} is neither a SavedModel nor holds numeric SavedModel versions")
  return latest
