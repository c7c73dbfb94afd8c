"""Tests of the plain-Python MNIST idx reader (no TensorFlow imported)."""

import gzip
import hashlib
import os

import numpy as np
import pytest

from components.mnist_example_gen import idx
from core import config

# Published MNIST class counts.
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _write_split(directory, prefix, images, labels, suffix=".gz"):
  idx.write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{suffix}"), images)
  idx.write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{suffix}"), labels)


def _random_split(num_examples, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(num_examples, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=(num_examples,), dtype=np.uint8)
  return images, labels


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("array", [
    np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
    np.array([3, 1, 4], dtype=np.uint8),
    np.array([[-1, 2], [30000, -40000]], dtype=np.int32),
    np.array([0.5, -2.25], dtype=np.float64),
])
def test_round_trip(tmp_path, array, suffix):
  path = str(tmp_path / f"data-idx{suffix}")
  idx.write_idx(path, array)
  read = idx.read_idx(path)
  assert read.dtype == array.dtype and read.dtype.isnative
  np.testing.assert_array_equal(read, array)


def test_gzip_detected_by_content_not_name(tmp_path):
  array = np.array([7, 8, 9], dtype=np.uint8)
  gz_path = str(tmp_path / "labels.gz")
  idx.write_idx(gz_path, array)
  renamed = str(tmp_path / "labels-without-suffix")
  os.rename(gz_path, renamed)
  np.testing.assert_array_equal(idx.read_idx(renamed), array)


def test_max_items_reads_a_prefix(tmp_path):
  images, _ = _random_split(5)
  path = str(tmp_path / "images.gz")
  idx.write_idx(path, images)
  np.testing.assert_array_equal(idx.read_idx(path, max_items=2), images[:2])
  np.testing.assert_array_equal(idx.read_idx(path, max_items=50), images)


def test_bad_magic(tmp_path):
  path = tmp_path / "bad"
  path.write_bytes(b"\x01\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")
  with pytest.raises(ValueError, match="magic"):
    idx.read_idx(str(path))


def test_bad_dtype_code(tmp_path):
  path = tmp_path / "bad"
  path.write_bytes(b"\x00\x00\x07\x01" + (3).to_bytes(4, "big") + b"abc")
  with pytest.raises(ValueError, match="dtype code 0x07"):
    idx.read_idx(str(path))


@pytest.mark.parametrize("keep_bytes", [2, 6, 8 + 10])  # in magic, in dims, in data
def test_truncated_plain(tmp_path, keep_bytes):
  path = str(tmp_path / "labels")
  idx.write_idx(path, np.arange(20, dtype=np.uint8))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:keep_bytes])
  with pytest.raises(ValueError, match="truncated"):
    idx.read_idx(path)


def test_truncated_gzip(tmp_path):
  images, _ = _random_split(4)
  path = str(tmp_path / "images.gz")
  idx.write_idx(path, images)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError):
    idx.read_idx(path)


def test_trailing_bytes(tmp_path):
  path = tmp_path / "labels"
  path.write_bytes(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abcd")
  with pytest.raises(ValueError, match="after the data"):
    idx.read_idx(str(path))


def test_load_split(tmp_path):
  images, labels = _random_split(12)
  _write_split(str(tmp_path), "train", images, labels)
  got_images, got_labels = idx.load_split(str(tmp_path), "train")
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)
  got_images, got_labels = idx.load_split(str(tmp_path), "train", max_examples=5)
  np.testing.assert_array_equal(got_images, images[:5])
  np.testing.assert_array_equal(got_labels, labels[:5])


def test_find_split_files_prefers_gz_and_accepts_plain(tmp_path):
  images, labels = _random_split(3)
  _write_split(str(tmp_path), "t10k", images, labels, suffix="")
  assert idx.find_split_files(str(tmp_path), "t10k") == (
      str(tmp_path / "t10k-images-idx3-ubyte"), str(tmp_path / "t10k-labels-idx1-ubyte"))
  _write_split(str(tmp_path), "t10k", images, labels, suffix=".gz")
  assert idx.find_split_files(str(tmp_path), "t10k") == (
      str(tmp_path / "t10k-images-idx3-ubyte.gz"), str(tmp_path / "t10k-labels-idx1-ubyte.gz"))
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    idx.find_split_files(str(tmp_path), "train")


def test_count_mismatch(tmp_path):
  images, labels = _random_split(6)
  _write_split(str(tmp_path), "train", images, labels[:5])
  with pytest.raises(ValueError, match="6 images but 5 labels"):
    idx.load_split(str(tmp_path), "train")


def test_wrong_image_shape(tmp_path):
  _write_split(str(tmp_path), "train", np.zeros((2, 28, 27), np.uint8), np.zeros(2, np.uint8))
  with pytest.raises(ValueError, match="28, 28"):
    idx.load_split(str(tmp_path), "train")


def test_label_out_of_range(tmp_path):
  _write_split(str(tmp_path), "train", np.zeros((2, 28, 28), np.uint8),
               np.array([3, 10], np.uint8))
  with pytest.raises(ValueError, match="label 10"):
    idx.load_split(str(tmp_path), "train")


def _write_sums(directory, names):
  lines = []
  for name in names:
    with open(os.path.join(directory, name), "rb") as f:
      lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {name}\n")
  with open(os.path.join(directory, idx.CHECKSUMS_FILENAME), "w") as f:
    f.writelines(lines)


def test_checksums(tmp_path):
  directory = str(tmp_path)
  assert idx.verify_checksums(directory) == []  # no SHA256SUMS: nothing to check
  images, labels = _random_split(4)
  _write_split(directory, "train", images, labels)
  names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
  _write_sums(directory, names)
  assert idx.verify_checksums(directory) == names
  assert idx.verify_checksums(directory, [names[1], "unlisted"]) == [names[1]]

  # Same shape, different content: only the checksum can tell.
  idx.write_idx(os.path.join(directory, names[1]), (labels + 1) % 10)
  with pytest.raises(ValueError, match="does not match"):
    idx.verify_checksums(directory)
  assert idx.verify_checksums(directory, [names[0]]) == [names[0]]

  os.remove(os.path.join(directory, names[1]))
  with pytest.raises(ValueError, match="missing"):
    idx.verify_checksums(directory)


def test_embedded_mnist_checksums_and_counts():
  directory = config.EMBEDDED_MNIST_DIR
  assert len(idx.verify_checksums(directory)) == 4
  for prefix, expected_counts in (("train", TRAIN_CLASS_COUNTS), ("t10k", TEST_CLASS_COUNTS)):
    _, labels_path = idx.find_split_files(directory, prefix)
    labels = idx.read_idx(labels_path)  # labels only: cheap
    assert labels.dtype == np.uint8 and labels.shape == (sum(expected_counts),)
    assert np.bincount(labels, minlength=10).tolist() == expected_counts


def test_embedded_mnist_images_header():
  images_path, _ = idx.find_split_files(config.EMBEDDED_MNIST_DIR, "t10k")
  with gzip.open(images_path, "rb") as f:
    header = f.read(16)
  assert header[:4] == b"\x00\x00\x08\x03"
  images, labels = idx.load_split(config.EMBEDDED_MNIST_DIR, "t10k", max_examples=3)
  assert images.shape == (3, 28, 28) and labels.tolist() == [7, 2, 1]


def test_write_split_and_checksums_round_trip(tmp_path):
  directory = str(tmp_path)
  images, labels = _random_split(5)
  names = idx.write_split(directory, "train", images, labels)
  assert names == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
  sums_path = idx.write_checksums(directory, names)
  assert sums_path == os.path.join(directory, idx.CHECKSUMS_FILENAME)
  assert idx.verify_checksums(directory) == names
  got_images, got_labels = idx.load_split(directory, "train")
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)
  with pytest.raises(ValueError, match="5 images but 4 labels"):
    idx.write_split(directory, "t10k", images, labels[:4])


def test_write_idx_gzip_bytes_depend_only_on_the_array(tmp_path):
  array = np.arange(100, dtype=np.uint8)
  first, second = str(tmp_path / "a.gz"), str(tmp_path / "b.gz")
  idx.write_idx(first, array)
  os.utime(first, (0, 0))
  idx.write_idx(second, array)
  assert idx.sha256_of(first) == idx.sha256_of(second)


def _write_span(root, span, prefixes=idx.SPLIT_PREFIXES):
  directory = os.path.join(root, f"span-{span}")
  os.makedirs(directory)
  names = []
  for prefix in prefixes:
    names += idx.write_split(directory, prefix, *_random_split(2, seed=span))
  idx.write_checksums(directory, names)
  return directory


def test_list_spans_reads_only_span_folders(tmp_path):
  root = str(tmp_path)
  assert idx.list_spans(root) == {} and idx.list_spans(str(tmp_path / "absent")) == {}
  for span in (10, 2, 0):
    _write_span(root, span)
  os.makedirs(os.path.join(root, ".span-11.partial"))
  os.makedirs(os.path.join(root, "span-x"))
  os.makedirs(os.path.join(root, "span-07"))  # TFX would look for span-7
  (tmp_path / "span-12").write_text("a file, not a span")
  assert idx.list_spans(root) == {s: os.path.join(root, f"span-{s}") for s in (0, 2, 10)}


def test_check_span(tmp_path):
  root = str(tmp_path)
  for span in (1, 2):
    _write_span(root, span)
  _write_span(root, 3, prefixes=["train"])  # still arriving: no test set yet
  assert idx.check_span(root, 2) == 2
  assert idx.check_span(root) == 2  # the latest complete span
  with pytest.raises(FileNotFoundError, match=r"Span 3 in .* is incomplete: missing "
                                              r"t10k-images-idx3-ubyte\[.gz\], "
                                              r"t10k-labels-idx1-ubyte\[.gz\]$"):
    idx.check_span(root, 3)
  with pytest.raises(FileNotFoundError, match=r"Span 4 not found: .* \(spans in .*: \[1, 2, 3\]\)"):
    idx.check_span(root, 4)
  # A file its SHA256SUMS lists and which is absent makes a span incomplete too.
  with open(os.path.join(root, "span-2", idx.CHECKSUMS_FILENAME), "a", encoding="utf-8") as f:
    f.write(f"{'0' * 64}  extra.bin\n")
  assert idx.missing_span_files(root, 2) == ["extra.bin"]
  assert idx.check_span(root) == 1
  assert idx.missing_span_files(root, 9) is None
  with pytest.raises(FileNotFoundError, match=r"No complete span in .*/absent$"):
    idx.check_span(str(tmp_path / "absent"))
