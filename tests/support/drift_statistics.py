"""Real-MNIST statistics for the DriftGate, computed by TFDV in memory and written as artifacts.

`statistics_artifact` lays statistics out as StatisticsGen does (a binary
DatasetFeatureStatisticsList in <uri>/Split-<split>/FeatureStats.pb; `span`, `split_names` set) and
`schema_artifact` as SchemaGen does (<uri>/schema.pbtxt), so the gate's executor reads them as in
a pipeline run.

Run as a module, it measures the Jensen-Shannon divergences the gate sees between spans of real
MNIST and against drifted spans (the thresholds of DriftConfig are chosen from these):
  .venv/bin/python -m tests.support.drift_statistics [--data-dir data/mnist] [--span-size 10000]
"""

import argparse
import os
from typing import Dict, Optional, Tuple

import numpy as np
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from components.mnist_example_gen import idx
from core.config import IMAGE_KEY
from core.config import LABEL_KEY

MNIST_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "data", "mnist")


def mnist_train(limit: Optional[int] = None,
                data_dir: str = MNIST_DIR) -> Tuple[np.ndarray, np.ndarray]:
  """The first `limit` (None = all) training images [N, 28, 28] uint8 and labels [N]."""
  return idx.load_split(data_dir, "train", limit)


def _record_batch(images: np.ndarray, labels: np.ndarray) -> pa.RecordBatch:
  """The Arrow batch TFXIO makes of MnistExampleGen's tf.Examples: one int64 list per feature."""
  count = len(images)
  pixels = np.asarray(images, np.int64).reshape(count, -1)
  width = pixels.shape[1]
  image = pa.ListArray.from_arrays(pa.array(np.arange(0, count * width + 1, width, np.int32)),
                                   pa.array(pixels.reshape(-1)))
  label = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32)),
                                   pa.array(np.asarray(labels, np.int64)))
  return pa.RecordBatch.from_arrays([image, label], [IMAGE_KEY, LABEL_KEY])


def statistics_of(images: np.ndarray,
                  labels: np.ndarray) -> statistics_pb2.DatasetFeatureStatisticsList:
  """TFDV's statistics of examples (`image`: the pixel values, `label`: the digit) with
  StatisticsGen's default options."""
  return stats_impl.generate_statistics_in_memory(_record_batch(images, labels),
                                                  tfdv.StatsOptions())


def statistics_artifact(uri: str,
                        statistics: Dict[str, statistics_pb2.DatasetFeatureStatisticsList],
                        span: int) -> standard_artifacts.ExampleStatistics:
  """An ExampleStatistics artifact holding `statistics` ({split: statistics})."""
  artifact = standard_artifacts.ExampleStatistics()
  artifact.uri = uri
  artifact.span = span
  artifact.split_names = artifact_utils.encode_split_names(list(statistics))
  for split, stats in statistics.items():
    io_utils.write_bytes_file(
        os.path.join(artifact_utils.get_split_uri([artifact], split), "FeatureStats.pb"),
        stats.SerializeToString())
  return artifact


def inferred_schema(statistics: statistics_pb2.DatasetFeatureStatisticsList) -> schema_pb2.Schema:
  """The schema SchemaGen infers from `statistics` (infer_feature_shape=True)."""
  return tfdv.infer_schema(statistics, infer_feature_shape=True)


def schema_artifact(uri: str, schema: schema_pb2.Schema) -> standard_artifacts.Schema:
  """A Schema artifact holding `schema`."""
  io_utils.write_pbtxt_file(os.path.join(uri, "schema.pbtxt"), schema)
  artifact = standard_artifacts.Schema()
  artifact.uri = uri
  return artifact


def _drifted_spans(images: np.ndarray, labels: np.ndarray) -> Dict[str, Tuple[np.ndarray,
                                                                              np.ndarray]]:
  """Variants of one span: label mixes and pixel distributions a bad import could produce."""
  rng = np.random.default_rng(0)
  result = {}
  for digit in (1, 3, 8):
    keep = labels == digit
    result[f"labels all {digit} (its images only)"] = (images[keep], labels[keep])
  result["labels all 3 (every image relabelled)"] = (images, np.full_like(labels, 3))
  for digit in (0, 5, 9):
    keep = labels != digit
    result[f"digit {digit} missing"] = (images[keep], labels[keep])
  extra = np.flatnonzero(labels == 3)
  both = np.concatenate([np.arange(len(labels)), extra])
  result["digit 3 twice as frequent"] = (images[both], labels[both])
  result["images inverted (255 - pixel)"] = (255 - images, labels)
  half = len(images) // 2
  result["half the images inverted"] = (np.concatenate([255 - images[:half], images[half:]]),
                                         labels)
  result["images scaled to 0..1 (pixel // 255)"] = (images // 255, labels)
  result["pixels x0.8 (dimmer)"] = ((images * 0.8).astype(np.uint8), labels)
  noisy = np.clip(images.astype(np.float64) + rng.normal(0.0, 20.0, images.shape), 0, 255)
  result["gaussian noise sigma 20"] = (noisy.astype(np.uint8), labels)
  result["images shifted 2 pixels right"] = (np.roll(images, 2, axis=2), labels)
  return result


def measure(data_dir: str, span_size: int, num_spans: int) -> None:
  """Prints the gate's Jensen-Shannon divergences: span to span, then drifted spans."""
  # pylint: disable=g-import-not-at-top
  from components.drift_gate import executor
  from core.config import DriftConfig
  images, labels = mnist_train(span_size * num_spans, data_dir)
  spans = [(images[k * span_size:(k + 1) * span_size], labels[k * span_size:(k + 1) * span_size])
           for k in range(num_spans)]
  stats = [statistics_of(*span) for span in spans]
  schema = inferred_schema(stats[0])
  config = DriftConfig()

  def divergences(current, baseline):
    _, features, _ = executor.compare(current, baseline, schema, config)
    return features[LABEL_KEY]["jensen_shannon"], features[IMAGE_KEY]["jensen_shannon"]

  print(f"{num_spans} disjoint spans of {span_size} MNIST training examples; "
        "Jensen-Shannon divergence (TFDV drift comparator, train split)")
  print(f"{'current vs baseline':48s} {'label':>8s} {'image':>8s}")
  pairs = [(i, j) for i in range(num_spans) for j in range(i)]
  worst = [0.0, 0.0]
  for i, j in pairs:
    label, image = divergences(stats[i], stats[j])
    worst = [max(worst[0], label), max(worst[1], image)]
    if i == j + 1:
      print(f"{f'span {i} vs span {j}':48s} {label:8.5f} {image:8.5f}")
  print(f"{f'max over all {len(pairs)} pairs':48s} {worst[0]:8.5f} {worst[1]:8.5f}")
  baseline = stats[num_spans - 2]
  for name, (drift_images, drift_labels) in _drifted_spans(*spans[-1]).items():
    label, image = divergences(statistics_of(drift_images, drift_labels), baseline)
    print(f"{f'{name} ({len(drift_labels)})':48s} {label:8.5f} {image:8.5f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", default=MNIST_DIR)
  parser.add_argument("--span-size", type=int, default=10000)
  parser.add_argument("--spans", type=int, default=6)
  args = parser.parse_args()
  measure(args.data_dir, args.span_size, args.spans)


if __name__ == "__main__":
  main()
