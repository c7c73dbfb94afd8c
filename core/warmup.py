"""TF Serving warm-up requests, replayed by the server when it loads a model version.

Without them the first real request pays for graph initialisation (seconds). The server reads
`<saved_model_dir>/assets.extra/tf_serving_warmup_requests`: a TFRecord of PredictionLog protos.
"""

import os
from typing import Iterable, List, Optional, Sequence

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from core import serving_contract
from core.config import NUM_CLASSES

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
# TF Serving reads at most this many warm-up records and fails the model load beyond it.
MAX_WARMUP_RECORDS = 1000


def warmup_file_path(saved_model_dir: str) -> str:
  return os.path.join(saved_model_dir, WARMUP_DIR, WARMUP_FILE)


def default_warmup_requests(model_name: str = serving_contract.DEFAULT_MODEL_NAME,
                            labels: Optional[Sequence[int]] = None,
                            guidance_scale: float = 1.5, num_steps: int = 2,
                            seed: int = 0) -> List[predict_pb2.PredictRequest]:
  """One guided request for every digit: runs the whole sampler graph, cheaply (few steps)."""
  labels = list(range(NUM_CLASSES)) if labels is None else list(labels)
  return [serving_contract.build_grpc_request(labels, guidance_scale, num_steps, seed, model_name)]


def write_warmup_requests(saved_model_dir: str,
                          requests: Optional[Iterable[predict_pb2.PredictRequest]] = None) -> str:
  """Writes `requests` (default: `default_warmup_requests()`) into the SavedModel; returns the path.

  The SavedModel's signatures are not touched: TF Serving finds the file by its fixed path.
  """
  requests = list(default_warmup_requests() if requests is None else requests)
  if not requests:
    raise ValueError("No warm-up requests to write")
  if len(requests) > MAX_WARMUP_RECORDS:
    raise ValueError(f"TF Serving reads at most {MAX_WARMUP_RECORDS} warm-up requests, "
                     f"got {len(requests)}")
  path = warmup_file_path(saved_model_dir)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
  return path


def read_warmup_requests(saved_model_dir: str) -> List[predict_pb2.PredictRequest]:
  """The PredictRequests of a SavedModel's warm-up file, in order."""
  requests = []
  for record in tf.data.TFRecordDataset(warmup_file_path(saved_model_dir)).as_numpy_iterator():
    requests.append(prediction_log_pb2.PredictionLog.FromString(record).predict_log.request)
  return requests
