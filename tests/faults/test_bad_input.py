"""Bad input on the command line: each is refused in about a second, before TFX is imported,
with one line naming the file or field and a documented exit code, and nothing is written to the
pipeline root or the serving dir. The data here comes without SHA256SUMS (a user's own files),
so the idx parser's own checks are what catch it; a checksum mismatch is its own case."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from components.mnist_example_gen import idx
from pipeline import cli
from pipeline import retrain
from pipeline import run as run_lib

TRAIN, EVAL = 64, 32


def _mnist(directory, checksums=False):
  """A valid plain MNIST folder of random digits (no SHA256SUMS unless asked)."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  names = []
  for prefix, count in (("train", TRAIN), ("t10k", EVAL)):
    names += idx.write_split(directory, prefix,
                             rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
                             rng.integers(0, 10, count, dtype=np.uint8))
  if checksums:
    idx.write_checksums(directory, names)
  return str(directory)


TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"


def _rewrite(path, payload: bytes, compress=True):
  with open(path, "wb") as f:
    f.write(gzip.compress(payload, mtime=0) if compress else payload)


def _idx_bytes(array: np.ndarray) -> bytes:
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  return header + array.astype(np.uint8).tobytes()


def _missing_labels(d):
  os.remove(os.path.join(d, TRAIN_LABELS))


def _truncated(d):
  path = os.path.join(d, TRAIN_IMAGES)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])


def _wrong_magic(d):
  _rewrite(os.path.join(d, TRAIN_IMAGES), b"\x01\x02\x08\x03" + b"\x00" * 100)


def _wrong_image_size(d):
  _rewrite(os.path.join(d, TRAIN_IMAGES), _idx_bytes(np.zeros((TRAIN, 32, 32))))


def _counts_differ(d):
  _rewrite(os.path.join(d, TRAIN_LABELS), _idx_bytes(np.zeros(TRAIN - 1)))


def _label_out_of_range(d):
  labels = np.zeros(TRAIN)
  labels[5] = 12
  _rewrite(os.path.join(d, TRAIN_LABELS), _idx_bytes(labels))


def _not_gzip(d):
  # gzip's magic bytes, then garbage: it claims to be gzip but does not decompress.
  _rewrite(os.path.join(d, TRAIN_IMAGES), b"\x1f\x8b" + os.urandom(200), compress=False)


def _no_examples(d):
  _rewrite(os.path.join(d, TRAIN_IMAGES), _idx_bytes(np.zeros((0, 28, 28))))
  _rewrite(os.path.join(d, TRAIN_LABELS), _idx_bytes(np.zeros(0)))


BROKEN_FILES = {
    "missing file": (_missing_labels, [TRAIN_LABELS[:-3], "missing"]),
    "truncated file": (_truncated, [TRAIN_IMAGES, "cannot read"]),
    "wrong magic number": (_wrong_magic, [TRAIN_IMAGES, "bad idx magic number"]),
    "wrong image size": (_wrong_image_size, [TRAIN_IMAGES, "[N, 28, 28]", "[64, 32, 32]"]),
    "image and label counts differ": (_counts_differ, ["64 images but 63 labels"]),
    "label outside 0-9": (_label_out_of_range, [TRAIN_LABELS, "label 12 outside 0-9"]),
    "gzip that does not decompress": (_not_gzip, [TRAIN_IMAGES, "cannot read"]),
    "no examples": (_no_examples, [TRAIN_IMAGES, "holds no examples"]),
}


def _run(argv, tmp_path, capsys, main=run_lib.main):
  root, serving = tmp_path / "root", tmp_path / "serving"
  code = main(["--profile", "smoke", "--pipeline-root", str(root), "--serving-dir", str(serving)]
              + argv)
  err = capsys.readouterr().err.strip().splitlines()
  return code, err, root, serving


def _nothing_written(root, serving):
  """Nothing in the pipeline root but its lock file; the serving dir empty."""
  assert not os.path.isdir(root) or set(os.listdir(root)) <= {".pipeline.lock"}
  assert not os.path.isdir(serving) or os.listdir(serving) == []


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_a_broken_mnist_file_is_refused_with_one_line_naming_it(case, tmp_path, capsys):
  data_dir = _mnist(tmp_path / "data")
  breaker, expected = BROKEN_FILES[case]
  breaker(data_dir)
  code, err, root, serving = _run(["--data-dir", data_dir], tmp_path, capsys)
  assert code == cli.BAD_INPUT == 6
  assert len(err) == 1 and err[0].startswith("pipeline.run: error: ")
  for text in expected:
    assert text in err[0]
  _nothing_written(root, serving)


def test_a_checksum_mismatch_is_refused_naming_the_file(tmp_path, capsys):
  data_dir = _mnist(tmp_path / "data", checksums=True)
  images = idx.load_split(data_dir, "train")[0].copy()
  images[0, 0, 0] ^= 1  # one pixel, one bit
  idx.write_split(data_dir, "train", images, idx.load_split(data_dir, "train")[1])
  code, err, root, serving = _run(["--data-dir", data_dir], tmp_path, capsys)
  assert code == cli.BAD_INPUT
  assert TRAIN_IMAGES in err[-1] and "does not match SHA256SUMS" in err[-1]
  _nothing_written(root, serving)


@pytest.mark.parametrize("setup, expected", [
    (lambda d: None, "does not exist"),
    (lambda d: os.makedirs(d), "holds neither span-N/ folders nor the MNIST files"),
])
def test_a_missing_or_empty_data_dir_is_refused(setup, expected, tmp_path, capsys):
  data_dir = str(tmp_path / "data")
  setup(data_dir)
  code, err, root, serving = _run(["--data-dir", data_dir], tmp_path, capsys)
  assert code == cli.BAD_INPUT and expected in err[-1] and data_dir in err[-1]
  _nothing_written(root, serving)


def test_an_empty_span_is_refused_naming_it(tmp_path, capsys):
  _mnist(tmp_path / "data" / "span-1")
  os.makedirs(tmp_path / "data" / "span-2")  # created, never filled
  code, err, _, _ = _run(["--data-dir", str(tmp_path / "data"), "--span", "2"], tmp_path, capsys)
  assert code == cli.BAD_INPUT
  assert "Span 2" in err[-1] and "incomplete" in err[-1] and TRAIN_IMAGES[:-3] in err[-1]


def test_a_span_that_does_not_exist_is_refused_by_retrain_too(tmp_path, capsys):
  _mnist(tmp_path / "data" / "span-1")
  root, serving = tmp_path / "root", tmp_path / "serving"
  code = retrain.main(["--profile", "smoke", "--data-dir", str(tmp_path / "data"), "--span", "9",
                       "--pipeline-root", str(root), "--serving-dir", str(serving)])
  captured = capsys.readouterr()
  assert code == retrain.EXIT_CODES["bad_input"] == cli.BAD_INPUT
  assert '"outcome": "bad_input"' in captured.out.splitlines()[-1]
  assert "Span 9 not found" in captured.err
  _nothing_written(root, serving)


@pytest.mark.parametrize("argv, expected", [
    (["--set", "train.train_step=5"], "Unknown config key 'train.train_step'; did you mean "
                                      "train.train_steps"),
    (["--set", "train.train_steps=0"], "config train.train_steps must be >= 1"),
    (["--set", "train.train_steps=-5"], "config train.train_steps must be >= 1"),
    (["--set", "sampler.guidance_scale=-0.5"], "config sampler.guidance_scale must be >= 0"),
    (["--set", "train.batch_size=2.5"], "config train.batch_size must be >= 1 (a whole number)"),
    (["--set", "unet.groups=3"], "config unet.groups (3) must divide every level's channels"),
    (["--set", "sampler.num_steps=2000"], "sampler.num_steps (2000) must be <= sampler.max_steps"),
    (["--set", "train.train_steps"], "--set expects KEY=VALUE"),
])
def test_a_bad_config_value_is_refused_naming_the_field(argv, expected, tmp_path, capsys):
  code, err, root, serving = _run(argv, tmp_path, capsys)
  assert code == cli.USAGE == 2
  assert len(err) == 1 and expected in err[0]
  assert not os.path.exists(root) and not os.path.exists(serving)


def test_an_unknown_profile_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as exit_info:
    run_lib.main(["--profile", "tiny"])
  assert exit_info.value.code == cli.USAGE
  assert "invalid choice: 'tiny'" in capsys.readouterr().err


@pytest.mark.parametrize("flag, what", [("--serving-dir", "serving dir"),
                                        ("--pipeline-root", "pipeline root")])
def test_an_unwritable_directory_is_refused_before_training(flag, what, tmp_path, capsys):
  # A path below a regular file cannot be created, even by root (to whom permissions are no bar).
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  argv = ["--profile", "smoke", "--pipeline-root", str(tmp_path / "root"),
          "--serving-dir", str(tmp_path / "serving"), flag, str(blocker / "sub")]
  code = run_lib.main(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == cli.BAD_INPUT
  assert f"{what} {blocker / 'sub'} is not writable: Not a directory" in err[-1]


def test_the_user_sees_one_line_and_no_traceback(tmp_path):
  """As a user runs it: a fresh process, the exit code, stderr's one line."""
  data_dir = _mnist(tmp_path / "data")
  _label_out_of_range(data_dir)
  result = subprocess.run(
      [sys.executable, "-m", "pipeline.run", "--profile", "smoke", "--data-dir", data_dir,
       "--pipeline-root", str(tmp_path / "root"), "--serving-dir", str(tmp_path / "serving")],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == cli.BAD_INPUT
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines() == [
      f"pipeline.run: error: {os.path.join(data_dir, TRAIN_LABELS)}: label 12 outside 0-9; "
      "nothing ran"]
