"""Spans: the `python -m pipeline.spans` command, and the rolling training window over the
Examples of successive runs (pipeline/windows.py) in a real LocalDagRunner pipeline."""

import os
import re
import shutil

import numpy as np
import pytest

from components.mnist_example_gen import MnistExampleGen
from components.mnist_example_gen import idx
from core import config
from pipeline import spans
from pipeline import windows
from tests.support import spans as span_support

# TFX after core's environment, which the imports above set.
from tfx.orchestration import metadata  # pylint: disable=g-bad-import-order
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.local import local_dag_runner

NUM_TRAIN = 60000
NUM_TEST = 10000


def _files(directory):
  return sorted(name for name in os.listdir(directory))


def test_split_cuts_mnist_train_into_equal_disjoint_spans_in_file_order(tmp_path, capsys):
  root = str(tmp_path / "root")
  assert spans.main(["split", "--source", config.EMBEDDED_MNIST_DIR, "--out", root,
                     "--spans", "6"]) == 0
  assert capsys.readouterr().out.split() == [os.path.join(root, f"span-{n}") for n in range(1, 7)]
  assert sorted(idx.list_spans(root)) == [1, 2, 3, 4, 5, 6]
  _, all_labels = idx.find_split_files(config.EMBEDDED_MNIST_DIR, "train")
  all_labels = idx.read_idx(all_labels)
  _, test_labels = idx.load_split(config.EMBEDDED_MNIST_DIR, "t10k")
  span_labels = []
  for span, directory in idx.list_spans(root).items():
    assert _files(directory) == sorted([idx.CHECKSUMS_FILENAME, "t10k-images-idx3-ubyte.gz",
                                        "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                                        "train-labels-idx1-ubyte.gz"])
    assert len(idx.verify_checksums(directory)) == 4, span
    labels = idx.read_idx(idx.find_split_files(directory, "train")[1])
    assert len(labels) == NUM_TRAIN // 6
    span_labels.append(labels)
    np.testing.assert_array_equal(idx.read_idx(idx.find_split_files(directory, "t10k")[1]),
                                  test_labels)
  np.testing.assert_array_equal(np.concatenate(span_labels), all_labels)


def test_split_images_and_checksum_format(tmp_path):
  root = str(tmp_path / "root")
  span_support.tiny_spans(root, 3)
  source_images, source_labels = idx.load_split(config.EMBEDDED_MNIST_DIR, "train", 3 * 64)
  for span, directory in idx.list_spans(root).items():
    images, labels = idx.load_split(directory, "train")
    part = slice((span - 1) * 64, span * 64)
    np.testing.assert_array_equal(images, source_images[part])
    np.testing.assert_array_equal(labels, source_labels[part])
    assert len(idx.load_split(directory, "t10k")[0]) == 32
    with open(os.path.join(directory, idx.CHECKSUMS_FILENAME), encoding="utf-8") as f:
      lines = f.read().splitlines()
    # The format of data/mnist/SHA256SUMS (sha256sum's): digest, two spaces, file name.
    assert [re.fullmatch(r"[0-9a-f]{64}  (\S+)", line).group(1) for line in lines] == sorted(
        name for name in _files(directory) if name != idx.CHECKSUMS_FILENAME)


def test_split_is_deterministic(tmp_path):
  first, second = str(tmp_path / "a"), str(tmp_path / "b")
  span_support.tiny_spans(first, 2)
  span_support.tiny_spans(second, 2)
  for span in (1, 2):
    with open(os.path.join(first, f"span-{span}", idx.CHECKSUMS_FILENAME), "rb") as a, \
        open(os.path.join(second, f"span-{span}", idx.CHECKSUMS_FILENAME), "rb") as b:
      assert a.read() == b.read()


def test_split_refuses_a_root_with_spans_and_bad_counts(tmp_path, capsys):
  root = str(tmp_path / "root")
  span_support.tiny_spans(root, 2)
  assert spans.main(["split", "--source", config.EMBEDDED_MNIST_DIR, "--out", root,
                     "--spans", "2"]) == 1
  assert "already holds spans [1, 2]; use `add`" in capsys.readouterr().err
  with pytest.raises(ValueError, match="--spans must be >= 1"):
    spans.split(config.EMBEDDED_MNIST_DIR, str(tmp_path / "other"), 0)
  with pytest.raises(ValueError, match="3 train images cannot fill 4 spans"):
    spans.split(config.EMBEDDED_MNIST_DIR, str(tmp_path / "other"), 4, max_train_examples=3)


def test_add_appends_the_next_span(tmp_path, capsys):
  root = str(tmp_path / "root")
  span_support.tiny_spans(root, 2)
  source = span_support.mnist_folder(str(tmp_path / "incoming"), train_start=1000)
  assert spans.main(["add", "--source", source, "--out", root]) == 0
  assert capsys.readouterr().out.strip() == os.path.join(root, "span-3")
  images, _ = idx.load_split(os.path.join(root, "span-3"), "train")
  np.testing.assert_array_equal(images, idx.load_split(source, "train")[0])
  assert len(idx.verify_checksums(os.path.join(root, "span-3"))) == 4
  # Into an empty root, `add` writes span 1; no partial folder is left behind.
  empty = str(tmp_path / "empty")
  assert spans.add(source, empty) == os.path.join(empty, "span-1")
  assert os.listdir(empty) == ["span-1"]


def test_add_checks_the_source_checksums(tmp_path, capsys):
  root = str(tmp_path / "root")
  source = span_support.mnist_folder(str(tmp_path / "incoming"), train_start=0)
  _, labels = idx.load_split(source, "t10k")
  idx.write_idx(os.path.join(source, "t10k-labels-idx1-ubyte.gz"), (labels + 1) % 10)
  assert spans.main(["add", "--source", source, "--out", root]) == 1
  assert re.search(r"t10k-labels-idx1-ubyte\.gz: SHA-256 \w+ does not match SHA256SUMS",
                   capsys.readouterr().err)
  assert idx.list_spans(root) == {}


def test_window_must_be_positive():
  example_gen = MnistExampleGen(data_dir=config.EMBEDDED_MNIST_DIR)
  for bad in (0, -1, True, 2.0):
    with pytest.raises(ValueError, match="window_spans must be an int >= 1"):
      windows.training_window(example_gen, bad)


def _run_window_pipeline(root, data_root, window_spans, span=None):
  """ExampleGen on `data_root` and a probe of the training window; returns the metadata path."""
  example_gen = MnistExampleGen(data_dir=data_root, span=span)
  window = windows.training_window(example_gen, window_spans)
  probe = span_support.ExamplesProbe(examples=window.outputs["examples"]).with_id("probe")
  metadata_path = os.path.join(root, "metadata.sqlite")
  local_dag_runner.LocalDagRunner().run(tfx_pipeline.Pipeline(
      pipeline_name="window-test", pipeline_root=os.path.join(root, "pipeline_root"),
      components=[example_gen, window, probe], enable_cache=True,
      metadata_connection_config=metadata.sqlite_metadata_connection_config(metadata_path),
      beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
  return metadata_path


@pytest.mark.slow
def test_window_holds_the_last_k_spans_as_they_arrive(tmp_path):
  source = str(tmp_path / "source")
  span_support.tiny_spans(source, 3)
  data_root = str(tmp_path / "data")
  os.makedirs(data_root)
  root = str(tmp_path / "run")

  def run(**kwargs):
    metadata_path = _run_window_pipeline(root, data_root, window_spans=2, **kwargs)
    probes = span_support.node_executions(metadata_path, "window-test", "probe")
    gens = span_support.node_executions(metadata_path, "window-test", "MnistExampleGen")
    return metadata_path, gens, probes

  windows_seen = []
  for span in (1, 2, 3):
    shutil.copytree(os.path.join(source, f"span-{span}"), os.path.join(data_root, f"span-{span}"))
    metadata_path, gens, probes = run()
    assert span_support.states(gens)[-1] == "COMPLETE"
    windows_seen.append([entry["span"] for entry in
                         span_support.input_spans(metadata_path, probes[-1].id)])
  assert windows_seen == [[1], [1, 2], [2, 3]]

  # Nothing new: ExampleGen and the window's consumer are cache hits.
  _, gens, probes = run()
  assert span_support.states(gens) == ["COMPLETE"] * 3 + ["CACHED"]
  assert span_support.states(probes) == ["COMPLETE"] * 3 + ["CACHED"]

  # Span 2 read again after its files changed: a newer Examples of span 2, which replaces the
  # older one in the window (still one artifact per span).
  old_span_2 = span_support.input_spans(metadata_path, probes[-2].id)[0]["id"]
  span_support.mnist_folder(str(tmp_path / "fix"), train_start=5000)
  shutil.rmtree(os.path.join(data_root, "span-2"))
  shutil.copytree(str(tmp_path / "fix"), os.path.join(data_root, "span-2"))
  metadata_path, gens, probes = run(span=2)
  assert span_support.states(gens)[-1] == "COMPLETE"
  window = span_support.input_spans(metadata_path, probes[-1].id)
  assert [entry["span"] for entry in window] == [2, 3]
  assert window[0]["id"] > old_span_2
