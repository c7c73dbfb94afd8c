"""Checks what a run needs before anything heavy starts, so a bad input is refused in a second
with one line naming the file or field, not after the pipeline has run for half an hour.

The components check the same things again when they run (under any orchestrator); this is
the command line's early answer, using the same functions (components/mnist_example_gen/idx.py).
"""

import os
import uuid

from components.mnist_example_gen import idx
from core import config as config_lib


class InputError(Exception):
  """Input or setup a run cannot use; the message names the file, directory or field."""


def _local(path: str) -> bool:
  return "://" not in path


def data_directory(data: config_lib.DataConfig, span) -> str:
  """The MNIST directory a run reads for `span` (None: the latest complete one)."""
  root = data.data_dir
  if not os.path.isdir(root):
    raise InputError(f"data dir {root} does not exist")
  if span is None and not idx.list_spans(root):
    missing = idx.missing_files(root)
    if missing:
      raise InputError(f"{root} holds neither span-N/ folders nor the MNIST files: missing "
                       f"{', '.join(missing)}")
    return root
  try:
    return os.path.join(root, idx.span_dir_name(idx.check_span(root, span)))
  except FileNotFoundError as error:
    raise InputError(str(error)) from None


def check_data(data: config_lib.DataConfig) -> None:
  """Reads the splits a run will read (as much of them as it will read), checking checksums,
  idx headers, shapes, counts and labels."""
  if data.source != "idx" or not _local(data.data_dir):
    return  # TFDS and remote files are checked by the ExampleGen that reads them.
  spans = {data.span}
  if data.eval_span is not None:
    spans.add(data.eval_span)
  for span in sorted(spans, key=lambda s: -1 if s is None else s):
    directory = data_directory(data, span)
    for prefix, limit in (("train", data.max_train_examples), ("t10k", data.max_eval_examples)):
      try:
        idx.read_checked_split(directory, prefix, limit)
      except (ValueError, FileNotFoundError, OSError) as error:
        raise InputError(str(error)) from None


def check_writable(directory: str, what: str) -> None:
  """Creates `directory` if needed and proves a file can be written in it."""
  if not _local(directory):
    return
  probe = os.path.join(directory, f".write-check-{uuid.uuid4().hex}")
  try:
    os.makedirs(directory, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as error:
    raise InputError(f"{what} {directory} is not writable: {error.strerror or error}") from None


def check(config: config_lib.PipelineConfig, training: bool = True) -> None:
  """Everything a run of `config` needs that can be checked up front. `training`: it will push
  (so the serving dir must be writable too)."""
  check_writable(config.pipeline_root, "pipeline root")
  if training:
    check_writable(config.serving_dir, "serving dir")
  check_data(config.data)
