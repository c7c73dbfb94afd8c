"""Beam executor of MnistExampleGen: MNIST (idx files or TFDS) to tf.train.Examples.

Each example has `image`: 784 int64 pixel values 0-255 (28x28, row-major) and `label`: one int64
0-9. MNIST's own split is kept: its train part becomes split 'train', its test part split 'eval'.
"""

import dataclasses
import functools
import json
import os
import re
from typing import Any, Dict, Iterator, Optional, Union

import apache_beam as beam
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import struct_pb2
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components.mnist_example_gen import idx
from core import config

SOURCES = config.SOURCES
# Input split patterns, relative to input_base, per source. They match the files each split is read
# from: the driver fingerprints the files matching input_base/pattern, so the cache follows the
# data.
INPUT_PATTERNS = {
    "idx": {"train": "train-*", "eval": "t10k-*"},
    "tfds": {"train": "mnist/*/mnist-train.tfrecord*", "eval": "mnist/*/mnist-test.tfrecord*"},
}
# A data root of spans: the same patterns under `span-{SPAN}/`, which TFX's driver resolves.
SPAN_PATTERN_DIR = idx.SPAN_DIR_PREFIX + "{SPAN}"
# The MNIST part ('train' or 'test') a pattern reads, keyed by the pattern's file-name stem.
_PART_BY_STEM = {"train": "train", "t10k": "test", "mnist-train": "train", "mnist-test": "test"}
_IDX_PREFIX_BY_PART = {"train": "train", "test": "t10k"}


@dataclasses.dataclass(frozen=True)
class Options:
  """What the executor reads from custom_config."""
  source: str = "idx"  # "idx": idx(.gz) files in input_base; "tfds": TFDS data_dir = input_base.
  max_train_examples: Optional[int] = None  # keep the first N of MNIST train (None = all)
  max_eval_examples: Optional[int] = None  # keep the first N of MNIST test (None = all)
  tfds_download: bool = False  # "tfds" only: download and prepare when absent (needs network)

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
    for name in ("max_train_examples", "max_eval_examples"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be None or an int >= 0, got {value!r}")

  @classmethod
  def from_dict(cls, data: Dict[str, Any]) -> "Options":
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = set(data) - fields
    if unknown:
      raise ValueError(f"Unknown MnistExampleGen custom_config keys: {sorted(unknown)}")
    values = dict(data)
    for name in ("max_train_examples", "max_eval_examples"):
      # Struct stores every number as a double.
      if isinstance(values.get(name), float) and values[name].is_integer():
        values[name] = int(values[name])
    return cls(**values)


def input_patterns(source: str, spans: bool = False) -> Dict[str, str]:
  """{split name: input pattern} of `source`; `spans`: "idx" files under `span-{SPAN}/`."""
  if source not in SOURCES:
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
  if not spans:
    return dict(INPUT_PATTERNS[source])
  if source != "idx":
    raise ValueError(f"spans apply to source 'idx' only, got {source!r}")
  return {split: f"{SPAN_PATTERN_DIR}/{pattern}"
          for split, pattern in INPUT_PATTERNS[source].items()}


def make_custom_config(options: Options) -> example_gen_pb2.CustomConfig:
  """Packs `options` as a Struct in CustomConfig's Any; unset (None) options are left out."""
  struct = struct_pb2.Struct()
  struct.update({k: v for k, v in dataclasses.asdict(options).items() if v is not None})
  custom_config = example_gen_pb2.CustomConfig()
  custom_config.custom_config.Pack(struct)
  return custom_config


def parse_custom_config(
    value: Union[None, str, Dict[str, Any], example_gen_pb2.CustomConfig]) -> Options:
  """Returns the Options in exec_properties['custom_config'].

  TFX hands the executor the CustomConfig proto as its JSON text; a CustomConfig message, or a
  plain dict (or JSON object) of Options fields, as a direct caller may pass, is accepted too.
  """
  if not value:
    return Options()
  if isinstance(value, str):
    value = json.loads(value)
  if isinstance(value, dict):
    if "custom_config" not in value:
      return Options.from_dict(value)
    message = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(json.dumps(value), message)
    value = message
  if not value.HasField("custom_config"):
    return Options()
  struct = struct_pb2.Struct()
  if not value.custom_config.Unpack(struct):
    raise ValueError("MnistExampleGen custom_config must pack a google.protobuf.Struct, "
                     f"got {value.custom_config.type_url}")
  return Options.from_dict(json_format.MessageToDict(struct))


def mnist_part(split_pattern: str) -> str:
  """Returns the MNIST part, 'train' or 'test', that an input split pattern reads."""
  stem = re.match(r"[^*?\[.]*", os.path.basename(split_pattern)).group(0).rstrip("-")
  part = _PART_BY_STEM.get(stem)
  if part is None:
    raise ValueError(f"Split pattern {split_pattern!r} names no MNIST part; expected a file "
                     f"name starting with one of {sorted(_PART_BY_STEM)}")
  return part


def to_example(image: np.ndarray, label: int) -> tf.train.Example:
  """Returns the tf.train.Example of one 28x28 uint8 image and its label."""
  pixels = np.asarray(image, dtype=np.int64).reshape(-1)
  if pixels.size != idx.IMAGE_SHAPE[0] * idx.IMAGE_SHAPE[1]:
    raise ValueError(f"Expected a 28x28 image, got shape {np.shape(image)}")
  return tf.train.Example(features=tf.train.Features(feature={
      config.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=pixels.tolist())),
      config.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  }))


def _idx_examples(directory: str, prefix: str,
                  max_examples: Optional[int]) -> Iterator[tf.train.Example]:
  """Reads one split's idx files, checked against SHA256SUMS when present."""
  images, labels = idx.read_checked_split(directory, prefix, max_examples)
  for image, label in zip(images, labels):
    yield to_example(image, label)


def _tfds_examples(data_dir: str, tfds_split: str, max_examples: Optional[int],
                   download: bool) -> Iterator[tf.train.Example]:
  """Reads one split of the TFDS 'mnist' dataset prepared in `data_dir`."""
  # Imported here: it is slow to import and only this source needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder("mnist", data_dir=data_dir)
  if download:
    builder.download_and_prepare()
  elif not builder.is_prepared():
    raise FileNotFoundError(
        f"TFDS mnist is not prepared in {data_dir}: run `tfds build mnist --data_dir={data_dir}` "
        "or set tfds_download=True")
  dataset = builder.as_dataset(split=tfds_split, shuffle_files=False)  # file order: "first N" holds
  if max_examples is not None:
    dataset = dataset.take(max_examples)
  for record in tfds.as_numpy(dataset):
    yield to_example(record["image"], record["label"])


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _MnistToExample(  # pylint: disable=invalid-name
    pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
    split_pattern: str) -> beam.pvalue.PCollection:
  """Reads the MNIST part that `split_pattern` names and emits its tf.train.Examples."""
  options = parse_custom_config(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY))
  input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
  part = mnist_part(split_pattern)
  max_examples = options.max_train_examples if part == "train" else options.max_eval_examples
  if options.source == "idx":
    directory = os.path.dirname(os.path.join(input_base, split_pattern))
    prefix = _IDX_PREFIX_BY_PART[part]
    idx.find_split_files(directory, prefix)  # fail before the pipeline starts if files are missing
    read = functools.partial(_idx_examples, directory, prefix, max_examples)
  else:
    read = functools.partial(_tfds_examples, input_base, part, max_examples, options.tfds_download)
  # One element per split: the whole part is read in one call (MNIST fits in memory many times
  # over); WriteSplit reshuffles afterwards, so writing is still spread over workers.
  return (pipeline
          | "Start" >> beam.Create([None])
          | "Read" >> beam.FlatMap(lambda _, read_fn: read_fn(), read))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """Generic ExampleGen executor reading MNIST; see the module docstring for the format."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    return _MnistToExample
