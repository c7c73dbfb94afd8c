"""Makes a data root of spans out of MNIST idx files, in the layout MnistExampleGen reads.

  python -m pipeline.spans split --source data/mnist --out /data/root --spans 6
  python -m pipeline.spans add --source /incoming/mnist --out /data/root

A span is `<root>/span-{N}/` with the four MNIST idx .gz files (its train part, and the test set
as its eval part) and their SHA256SUMS. `split` cuts the train images of one MNIST folder, in file
order, into equal disjoint spans 1..K, each with the whole test set; `add` appends the next span
(the largest N + 1) from another MNIST folder. A span is written in a hidden folder and renamed
into place once complete, so a run that starts meanwhile never sees half a span.
"""

import argparse
import os
import shutil
import sys
from typing import List, Optional, Sequence

import numpy as np

from components.mnist_example_gen import idx

_TRAIN, _EVAL = idx.SPLIT_PREFIXES


def _load(source: str, split_prefix: str, max_examples: Optional[int]):
  """One split of an MNIST folder, checked against its SHA256SUMS (when it has one)."""
  images_path, labels_path = idx.find_split_files(source, split_prefix)
  idx.verify_checksums(source, [os.path.basename(images_path), os.path.basename(labels_path)])
  return idx.load_split(source, split_prefix, max_examples)


def write_span(root: str, span: int, train: Sequence[np.ndarray],
               evaluation: Sequence[np.ndarray]) -> str:
  """Writes `<root>/span-{span}/` from (images, labels) pairs; returns its path.

  Raises:
    FileExistsError: the span is already there (spans are never overwritten).
  """
  final = os.path.join(root, idx.span_dir_name(span))
  if os.path.exists(final):
    raise FileExistsError(f"{final} already exists")
  partial = os.path.join(root, f".{idx.span_dir_name(span)}.partial")
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  names = idx.write_split(partial, _TRAIN, *train) + idx.write_split(partial, _EVAL, *evaluation)
  idx.write_checksums(partial, names)
  os.rename(partial, final)
  return final


def split(source: str, out: str, num_spans: int, max_train_examples: Optional[int] = None,
          max_eval_examples: Optional[int] = None) -> List[str]:
  """Cuts the train images of `source` into `num_spans` equal spans 1..num_spans in `out`.

  Span k holds train images [(k-1)*n, k*n) in file order, n = (train images) // num_spans (a
  remainder is left out), and the first `max_eval_examples` test images (None = all) as its eval
  part. `max_train_examples` reads only the first N train images before cutting.

  Returns:
    The span folders written.
  """
  if num_spans < 1:
    raise ValueError(f"--spans must be >= 1, got {num_spans}")
  existing = idx.list_spans(out)
  if existing:
    raise FileExistsError(f"{out} already holds spans {sorted(existing)}; use `add` to append")
  images, labels = _load(source, _TRAIN, max_train_examples)
  evaluation = _load(source, _EVAL, max_eval_examples)
  per_span = len(images) // num_spans
  if per_span == 0:
    raise ValueError(f"{len(images)} train images cannot fill {num_spans} spans")
  os.makedirs(out, exist_ok=True)
  written = []
  for span in range(1, num_spans + 1):
    part = slice((span - 1) * per_span, span * per_span)
    written.append(write_span(out, span, (images[part], labels[part]), evaluation))
  return written


def add(source: str, out: str, max_train_examples: Optional[int] = None,
        max_eval_examples: Optional[int] = None) -> str:
  """Appends the MNIST folder `source` to `out` as the next span (largest span + 1, or 1)."""
  span = max(idx.list_spans(out), default=0) + 1
  train = _load(source, _TRAIN, max_train_examples)
  evaluation = _load(source, _EVAL, max_eval_examples)
  os.makedirs(out, exist_ok=True)
  return write_span(out, span, train, evaluation)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m pipeline.spans",
      description="Write MNIST as spans <out>/span-{N}/ for MnistExampleGen.")
  commands = parser.add_subparsers(dest="command", required=True)
  split_parser = commands.add_parser(
      "split", help="cut one MNIST folder's train images into equal spans 1..K")
  split_parser.add_argument("--spans", type=int, required=True, help="number of spans K")
  add_parser = commands.add_parser("add", help="append an MNIST folder as the next span")
  for sub in (split_parser, add_parser):
    sub.add_argument("--source", required=True, help="a folder with the four MNIST idx(.gz) files")
    sub.add_argument("--out", required=True, help="the data root that holds span-{N}/")
    sub.add_argument("--max-train-examples", type=int, default=None,
                     help="read only the first N train images of --source")
    sub.add_argument("--max-eval-examples", type=int, default=None,
                     help="read only the first N test images of --source")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    if args.command == "split":
      written = split(args.source, args.out, args.spans, args.max_train_examples,
                      args.max_eval_examples)
    else:
      written = [add(args.source, args.out, args.max_train_examples, args.max_eval_examples)]
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for path in written:
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
