"""Reads and writes MNIST idx files (plain or gzip) and the span folders that hold them, with
numpy only.

Kept free of TensorFlow and TFX so it imports in milliseconds and can be tested on its own.
idx format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a dtype code, the number of
dimensions, then one big-endian uint32 per dimension, then the data in C order, big-endian.
"""

import gzip
import hashlib
import os
import re
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
CHECKSUMS_FILENAME = "SHA256SUMS"
SPLIT_PREFIXES = ("train", "t10k")
# A data root holds spans in TFX's layout: one folder `span-{SPAN}` (SPAN a non-negative integer,
# no leading zeros: TFX fills {SPAN} with the plain number) per span, each with the four idx files
# of a plain MNIST folder.
SPAN_DIR_PREFIX = "span-"
_SPAN_DIR_RE = re.compile(re.escape(SPAN_DIR_PREFIX) + r"(0|[1-9][0-9]*)")

# idx dtype code -> numpy dtype (big-endian where it matters).
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: str):
  """Opens `path` for binary reading, decompressing if it is gzip (by content, not by name)."""
  with open(path, "rb") as probe:
    is_gzip = probe.read(2) == _GZIP_MAGIC
  return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _read_exactly(stream, num_bytes: int, path: str, what: str) -> bytes:
  try:
    data = stream.read(num_bytes)
  except (EOFError, OSError, gzip.BadGzipFile) as e:  # truncated or corrupt gzip stream
    raise ValueError(f"{path}: cannot read {what}: {e}") from e
  if len(data) != num_bytes:
    raise ValueError(f"{path}: truncated {what}: expected {num_bytes} bytes, got {len(data)}")
  return data


def read_idx(path: str, max_items: Optional[int] = None) -> np.ndarray:
  """Returns the array stored in an idx file.

  Args:
    path: an idx file, gzip-compressed or not.
    max_items: read only the first `max_items` entries along the first dimension (None = all),
      so a small slice of a large file costs only what it reads.

  Raises:
    ValueError: the file is not idx, is truncated, or has bytes after the data.
  """
  if max_items is not None and max_items < 0:
    raise ValueError(f"max_items must be >= 0, got {max_items}")
  with _open(path) as stream:
    magic = _read_exactly(stream, 4, path, "magic number")
    if magic[0] != 0 or magic[1] != 0:
      raise ValueError(f"{path}: bad idx magic number 0x{magic.hex()} (must start with 0000)")
    dtype = _IDX_DTYPES.get(magic[2])
    if dtype is None:
      raise ValueError(f"{path}: unknown idx dtype code 0x{magic[2]:02x}")
    num_dims = magic[3]
    if num_dims == 0:
      raise ValueError(f"{path}: idx file declares 0 dimensions")
    shape = list(struct.unpack(f">{num_dims}I", _read_exactly(stream, 4 * num_dims, path, "dims")))
    full_items = shape[0]
    if max_items is not None:
      shape[0] = min(shape[0], max_items)
    num_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = _read_exactly(stream, num_bytes, path, "data")
    if shape[0] == full_items and _read_trailing(stream, path):
      raise ValueError(f"{path}: unexpected bytes after the data of shape {shape}")
  # Native byte order, so callers never see a big-endian dtype.
  return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_trailing(stream, path: str) -> bool:
  try:
    return bool(stream.read(1))
  except (EOFError, OSError, gzip.BadGzipFile) as e:
    raise ValueError(f"{path}: corrupt data after the array: {e}") from e


def split_file_names(split_prefix: str) -> Tuple[str, str]:
  """Returns the (images, labels) file names of one split without suffix, e.g. for 'train'."""
  return f"{split_prefix}-images-idx3-ubyte", f"{split_prefix}-labels-idx1-ubyte"


def find_split_files(directory: str, split_prefix: str) -> Tuple[str, str]:
  """Returns the (images, labels) paths of one MNIST split, e.g. prefix 'train' or 't10k'.

  Looks for `<prefix>-images-idx3-ubyte[.gz]` and `<prefix>-labels-idx1-ubyte[.gz]`; when both the
  .gz and the plain file exist the .gz is read, since that is what SHA256SUMS usually lists.

  Raises:
    FileNotFoundError: either file is missing.
  """
  paths = []
  for name in split_file_names(split_prefix):
    candidates = [os.path.join(directory, name + suffix) for suffix in (".gz", "")]
    found = [path for path in candidates if os.path.isfile(path)]
    if not found:
      raise FileNotFoundError(f"No {name}[.gz] in {directory}")
    paths.append(found[0])
  return paths[0], paths[1]


def missing_files(directory: str) -> List[str]:
  """Returns the names ('<name>[.gz]') of the four MNIST idx files that `directory` lacks."""
  missing = []
  for prefix in SPLIT_PREFIXES:
    for name in split_file_names(prefix):
      if not any(os.path.isfile(os.path.join(directory, name + suffix)) for suffix in (".gz", "")):
        missing.append(name + "[.gz]")
  return missing


def _strip_gz(name: str) -> str:
  return name[:-len(".gz")] if name.endswith(".gz") else name


def span_dir_name(span: int) -> str:
  return f"{SPAN_DIR_PREFIX}{span}"


def list_spans(root: str) -> Dict[int, str]:
  """Returns {span: folder} of the `span-{SPAN}` folders in `root` ({} when there are none)."""
  if not os.path.isdir(root):
    return {}
  spans = {}
  for name in os.listdir(root):
    match = _SPAN_DIR_RE.fullmatch(name)
    path = os.path.join(root, name)
    if match and os.path.isdir(path):
      spans[int(match.group(1))] = path
  return dict(sorted(spans.items()))


def missing_span_files(root: str, span: int) -> Optional[List[str]]:
  """What `<root>/span-{span}/` lacks to be complete: None when the folder is absent, else the
  names of the missing MNIST idx files and of files its SHA256SUMS lists but which are absent
  ([] = complete)."""
  directory = os.path.join(root, span_dir_name(span))
  if not os.path.isdir(directory):
    return None
  missing = missing_files(directory)
  listed = read_checksums(directory)
  missing += [name for name in sorted(listed)
              if not os.path.isfile(os.path.join(directory, name))
              and _strip_gz(name) + "[.gz]" not in missing]
  return missing


def check_span(root: str, span: Optional[int] = None) -> int:
  """Returns the span a run reads from the data root `root`: `span` once checked complete, or
  (None) the largest complete span.

  Raises:
    FileNotFoundError: `span` is absent or incomplete, naming it and what it lacks; or, with
      span None, no span is complete.
  """
  spans = list_spans(root)
  if span is not None:
    missing = missing_span_files(root, span)
    if missing is None:
      raise FileNotFoundError(
          f"Span {span} not found: no {os.path.join(root, span_dir_name(span))}/ "
          f"(spans in {root}: {sorted(spans) or 'none'})")
    if missing:
      raise FileNotFoundError(f"Span {span} in {root} is incomplete: missing {', '.join(missing)}")
    return span
  incomplete = {}
  for candidate in sorted(spans, reverse=True):
    missing = missing_span_files(root, candidate)
    if not missing:
      return candidate
    incomplete[candidate] = missing
  details = "; ".join(f"span {s} misses {', '.join(m)}" for s, m in incomplete.items())
  raise FileNotFoundError(f"No complete span in {root}" + (f": {details}" if details else ""))


def load_split(directory: str, split_prefix: str,
               max_examples: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [N, 28, 28], labels uint8 [N]) of one MNIST split.

  Args:
    directory: the folder holding the idx files.
    split_prefix: 'train' or 't10k'.
    max_examples: keep only the first N examples (None = all).

  Raises:
    ValueError: wrong shapes or dtypes, image and label counts differ, or a label is not 0-9.
  """
  images_path, labels_path = find_split_files(directory, split_prefix)
  images = read_idx(images_path, max_items=max_examples)
  labels = read_idx(labels_path, max_items=max_examples)
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
    raise ValueError(f"{images_path}: expected uint8 images [N, 28, 28], "
                     f"got {images.dtype} {list(images.shape)}")
  if labels.dtype != np.uint8 or labels.ndim != 1:
    raise ValueError(f"{labels_path}: expected uint8 labels [N], "
                     f"got {labels.dtype} {list(labels.shape)}")
  if len(images) != len(labels):
    raise ValueError(f"{split_prefix}: {len(images)} images but {len(labels)} labels")
  if labels.size and labels.max() >= NUM_CLASSES:
    raise ValueError(f"{labels_path}: label {labels.max()} outside 0-{NUM_CLASSES - 1}")
  return images, labels


def read_checked_split(directory: str, split_prefix: str,
                       max_examples: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """`load_split`, after checking the split's files against SHA256SUMS when there is one.

  Raises:
    FileNotFoundError: a file of the split is missing.
    ValueError: a checksum differs, the files are not MNIST idx (see `load_split`), or the split
      holds no examples.
  """
  images_path, labels_path = find_split_files(directory, split_prefix)
  verify_checksums(directory, [os.path.basename(images_path), os.path.basename(labels_path)])
  images, labels = load_split(directory, split_prefix, max_examples)
  if not len(labels):
    raise ValueError(f"{images_path}: the {split_prefix} split holds no examples")
  return images, labels


def read_checksums(directory: str) -> Dict[str, str]:
  """Returns {filename: sha256 hex} from `directory`/SHA256SUMS, or {} when there is none."""
  sums_path = os.path.join(directory, CHECKSUMS_FILENAME)
  if not os.path.isfile(sums_path):
    return {}
  checksums = {}
  with open(sums_path, "r", encoding="utf-8") as sums_file:
    for line_number, line in enumerate(sums_file, start=1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      parts = line.split(maxsplit=1)
      if len(parts) != 2 or len(parts[0]) != 64:
        raise ValueError(f"{sums_path}:{line_number}: not '<sha256>  <filename>': {line!r}")
      # sha256sum writes '*name' for files hashed in binary mode.
      checksums[parts[1].lstrip("*")] = parts[0].lower()
  return checksums


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def verify_checksums(directory: str, filenames: Optional[Sequence[str]] = None) -> List[str]:
  """Checks files against `directory`/SHA256SUMS; does nothing when that file is absent.

  Args:
    directory: the folder holding SHA256SUMS and the files it lists.
    filenames: check only these (base names) among the listed files, e.g. the files of the split
      about to be read; files not listed are not checked. None = every listed file.

  Returns:
    The names of the files that were checked.

  Raises:
    ValueError: a checked file's digest differs, or a listed file is missing.
  """
  checksums = read_checksums(directory)
  if filenames is not None:
    wanted = set(filenames)
    checksums = {name: digest for name, digest in checksums.items() if name in wanted}
  for name, expected in sorted(checksums.items()):
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      raise ValueError(f"{path} is listed in {CHECKSUMS_FILENAME} but missing")
    actual = sha256_of(path)
    if actual != expected:
      raise ValueError(f"{path}: SHA-256 {actual} does not match {CHECKSUMS_FILENAME} ({expected})")
  return sorted(checksums)


def write_checksums(directory: str, filenames: Sequence[str]) -> str:
  """Writes `directory`/SHA256SUMS for `filenames` (base names), as `sha256sum` does; returns
  its path."""
  sums_path = os.path.join(directory, CHECKSUMS_FILENAME)
  lines = [f"{sha256_of(os.path.join(directory, name))}  {name}\n" for name in sorted(filenames)]
  with open(sums_path, "w", encoding="utf-8") as sums_file:
    sums_file.writelines(lines)
  return sums_path


def write_split(directory: str, split_prefix: str, images: np.ndarray,
                labels: np.ndarray) -> List[str]:
  """Writes one split's images and labels as `<prefix>-*-ubyte.gz`; returns their names."""
  if len(images) != len(labels):
    raise ValueError(f"{split_prefix}: {len(images)} images but {len(labels)} labels")
  names = [name + ".gz" for name in split_file_names(split_prefix)]
  for name, array in zip(names, (images, labels)):
    write_idx(os.path.join(directory, name), np.asarray(array, dtype=np.uint8))
  return names


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes `array` as an idx file (gzip when `path` ends in .gz)."""
  codes = {dtype: code for code, dtype in _IDX_DTYPES.items()}
  big_endian = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
  code = codes.get(big_endian)
  if code is None:
    raise ValueError(f"dtype {array.dtype} has no idx code")
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  payload = header + np.ascontiguousarray(array, dtype=big_endian).tobytes()
  if path.endswith(".gz"):
    # No name and mtime 0 in the gzip header: the same array always gives the same bytes, and so
    # the same SHA-256. Level 6: 20x faster than gzip's default 9 on MNIST images, for files 2%
    # larger.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                                 compresslevel=6, mtime=0) as f:
      f.write(payload)
  else:
    with open(path, "wb") as f:
      f.write(payload)
