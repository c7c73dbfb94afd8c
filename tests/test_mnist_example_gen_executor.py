"""Tests of the MnistExampleGen executor: tiny idx files in, Split-train/-eval tf.Examples out."""

import glob
import hashlib
import os

import numpy as np
import pytest

from components.mnist_example_gen import executor
from components.mnist_example_gen import idx
from core import config

# TensorFlow after core.environment, which the imports above run.
import tensorflow as tf  # pylint: disable=g-bad-import-order
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

NUM_TRAIN = 20
NUM_TEST = 10


def _random_split(num_examples, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(num_examples, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=(num_examples,), dtype=np.uint8)
  return images, labels


@pytest.fixture(name="mnist_dir")
def _mnist_dir(tmp_path):
  """A folder with tiny MNIST idx files and their SHA256SUMS; returns (dir, {prefix: arrays})."""
  directory = tmp_path / "mnist"
  directory.mkdir()
  splits = {"train": _random_split(NUM_TRAIN, seed=1), "t10k": _random_split(NUM_TEST, seed=2)}
  sums = []
  for prefix, (images, labels) in splits.items():
    for name, array in ((f"{prefix}-images-idx3-ubyte.gz", images),
                        (f"{prefix}-labels-idx1-ubyte.gz", labels)):
      idx.write_idx(str(directory / name), array)
      sums.append(f"{hashlib.sha256((directory / name).read_bytes()).hexdigest()}  {name}\n")
  (directory / idx.CHECKSUMS_FILENAME).write_text("".join(sums))
  return str(directory), splits


def _exec_properties(input_base, custom_config, source="idx", patterns=None):
  input_config = example_gen_pb2.Input(splits=[
      example_gen_pb2.Input.Split(name=name, pattern=pattern)
      for name, pattern in (patterns or executor.INPUT_PATTERNS[source]).items()
  ])
  return {
      standard_component_specs.INPUT_BASE_KEY: input_base,
      standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
      standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
          example_gen_pb2.Output()),
      standard_component_specs.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
      standard_component_specs.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
      # As TFX hands it over: the CustomConfig proto as JSON text.
      standard_component_specs.CUSTOM_CONFIG_KEY: proto_utils.proto_to_json(
          executor.make_custom_config(custom_config)),
  }


def _run(tmp_path, exec_properties):
  """Runs the executor; returns (artifact, {split: [(label, pixels)]})."""
  examples = standard_artifacts.Examples()
  examples.uri = str(tmp_path / "output")
  executor.Executor().Do(input_dict={}, output_dict={standard_component_specs.EXAMPLES_KEY: [
      examples]}, exec_properties=exec_properties)
  records = {}
  for split in artifact_utils.decode_split_names(examples.split_names):
    files = glob.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
    assert files, f"no output files for split {split}"
    records[split] = []
    for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
      features = tf.train.Example.FromString(serialized).features.feature
      assert sorted(features) == sorted([config.IMAGE_KEY, config.LABEL_KEY])
      pixels = list(features[config.IMAGE_KEY].int64_list.value)
      labels = list(features[config.LABEL_KEY].int64_list.value)
      assert len(pixels) == 784 and len(labels) == 1
      records[split].append((labels[0], tuple(pixels)))
  return examples, records


def _expected(images, labels):
  return sorted((int(label), tuple(int(p) for p in image.reshape(-1)))
                for image, label in zip(images, labels))


def test_do_writes_mnist_splits(tmp_path, mnist_dir):
  input_base, splits = mnist_dir
  examples, records = _run(tmp_path, _exec_properties(input_base, executor.Options()))
  assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
  assert examples.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"
  # Order is not kept (WriteSplit reshuffles); content must be exact.
  assert sorted(records["train"]) == _expected(*splits["train"])
  assert sorted(records["eval"]) == _expected(*splits["t10k"])


def test_do_keeps_first_examples(tmp_path, mnist_dir):
  input_base, splits = mnist_dir
  options = executor.Options(max_train_examples=7, max_eval_examples=3)
  _, records = _run(tmp_path, _exec_properties(input_base, options))
  train_images, train_labels = splits["train"]
  test_images, test_labels = splits["t10k"]
  assert sorted(records["train"]) == _expected(train_images[:7], train_labels[:7])
  assert sorted(records["eval"]) == _expected(test_images[:3], test_labels[:3])


def test_do_rejects_checksum_mismatch(tmp_path, mnist_dir):
  input_base, splits = mnist_dir
  _, labels = splits["t10k"]
  idx.write_idx(os.path.join(input_base, "t10k-labels-idx1-ubyte.gz"), (labels + 1) % 10)
  with pytest.raises(Exception, match="does not match SHA256SUMS"):
    _run(tmp_path, _exec_properties(input_base, executor.Options()))


def test_do_missing_files_fails_early(tmp_path):
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    _run(tmp_path, _exec_properties(str(tmp_path), executor.Options()))


def test_do_tfds_source(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  options = executor.Options(source="tfds", max_train_examples=6, tfds_download=True)
  # mock_data makes download_and_prepare a no-op and as_dataset yield random mnist-shaped records.
  with tfds.testing.mock_data(num_examples=9):
    _, records = _run(tmp_path, _exec_properties(str(tmp_path / "tfds"), options, source="tfds"))
  assert len(records["train"]) == 6
  assert len(records["eval"]) == 9
  for label, pixels in records["train"] + records["eval"]:
    assert 0 <= label < 10 and all(0 <= p < 256 for p in pixels)


def test_parse_custom_config_forms():
  options = executor.Options(max_train_examples=512, max_eval_examples=200)
  message = executor.make_custom_config(options)
  assert executor.parse_custom_config(message) == options
  assert executor.parse_custom_config(proto_utils.proto_to_json(message)) == options
  assert executor.parse_custom_config('{"source": "tfds"}') == executor.Options(source="tfds")
  assert executor.parse_custom_config({"max_eval_examples": 5}).max_eval_examples == 5
  assert executor.parse_custom_config(None) == executor.Options()
  assert executor.parse_custom_config("") == executor.Options()
  with pytest.raises(ValueError, match="Unknown"):
    executor.parse_custom_config({"max_examples": 5})
  with pytest.raises(ValueError, match="source"):
    executor.parse_custom_config({"source": "csv"})
  with pytest.raises(ValueError, match="max_train_examples"):
    executor.parse_custom_config({"max_train_examples": 2.5})


def test_mnist_part():
  assert executor.mnist_part("train-*") == "train"
  assert executor.mnist_part("/data/mnist/t10k-*") == "test"
  assert executor.mnist_part("t10k") == "test"
  assert executor.mnist_part("mnist/*/mnist-test.tfrecord*") == "test"
  with pytest.raises(ValueError, match="no MNIST part"):
    executor.mnist_part("validation-*")


def test_to_example():
  image = np.arange(784, dtype=np.int64).reshape(28, 28) % 256
  example = executor.to_example(image.astype(np.uint8), 7)
  features = example.features.feature
  assert list(features[config.IMAGE_KEY].int64_list.value) == image.reshape(-1).tolist()
  assert list(features[config.LABEL_KEY].int64_list.value) == [7]


def _span_properties(root, span):
  """Exec properties as TFX's driver leaves them for span `span`: {SPAN} filled in."""
  patterns = {split: pattern.replace("{SPAN}", str(span))
              for split, pattern in executor.input_patterns("idx", spans=True).items()}
  return _exec_properties(root, executor.Options(), patterns=patterns)


def test_input_patterns():
  assert executor.input_patterns("idx") == {"train": "train-*", "eval": "t10k-*"}
  assert executor.input_patterns("idx", spans=True) == {"train": "span-{SPAN}/train-*",
                                                        "eval": "span-{SPAN}/t10k-*"}
  assert executor.input_patterns("tfds") == executor.INPUT_PATTERNS["tfds"]
  with pytest.raises(ValueError, match="spans apply to source 'idx' only"):
    executor.input_patterns("tfds", spans=True)


def test_do_reads_the_resolved_span(tmp_path, mnist_dir):
  input_base, splits = mnist_dir
  root = tmp_path / "root"
  root.mkdir()
  os.rename(input_base, str(root / "span-2"))
  _, records = _run(tmp_path, _span_properties(str(root), 2))
  assert sorted(records["train"]) == _expected(*splits["train"])
  assert sorted(records["eval"]) == _expected(*splits["t10k"])


def test_do_rejects_checksum_mismatch_in_a_span(tmp_path, mnist_dir):
  input_base, splits = mnist_dir
  root = tmp_path / "root"
  root.mkdir()
  os.rename(input_base, str(root / "span-4"))
  images, _ = splits["train"]
  idx.write_idx(str(root / "span-4" / "train-images-idx3-ubyte.gz"), 255 - images)
  with pytest.raises(Exception, match=r"span-4/train-images-idx3-ubyte\.gz: SHA-256 \w+ does not "
                                      r"match SHA256SUMS"):
    _run(tmp_path, _span_properties(str(root), 4))
