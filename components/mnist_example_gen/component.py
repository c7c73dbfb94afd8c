"""MnistExampleGen: a FileBasedExampleGen that reads MNIST and keeps its train/test split."""

from typing import Optional

from tfx.components.example_gen import component
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2

from components.mnist_example_gen import driver
from components.mnist_example_gen import executor
from components.mnist_example_gen import idx


class MnistExampleGen(component.FileBasedExampleGen):
  """Emits MNIST as tf.Examples: split 'train' from MNIST train, split 'eval' from MNIST test.

  Features: `image` (784 int64 pixels 0-255, row-major 28x28) and `label` (one int64 0-9).
  The input split patterns name the data files, so the driver's fingerprint of them gives a cache
  hit when `data_dir` is unchanged and a new run when its files change.

  Spans: when `data_dir` holds `span-{N}/` folders (or `span` is given), the patterns are
  `span-{SPAN}/train-*` and `span-{SPAN}/t10k-*`, and TFX's driver resolves `{SPAN}` (the latest
  complete span, or `span`) and records `span` and `input_fingerprint` on the Examples. A plain
  MNIST folder is span 0.
  """

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = driver.Driver

  def __init__(self,
               data_dir: str,
               source: str = "idx",
               span: Optional[int] = None,
               max_train_examples: Optional[int] = None,
               max_eval_examples: Optional[int] = None,
               tfds_download: bool = False):
    """Builds the component.

    Args:
      data_dir: "idx": the folder with the four MNIST idx(.gz) files (and optionally SHA256SUMS,
        checked before reading), or a data root of `span-{N}/` folders of such files; "tfds": a
        TFDS data_dir with 'mnist' prepared in it.
      source: "idx" or "tfds".
      span: "idx" only: read span N (`data_dir`/span-N/) and fail before anything runs if it is
        absent or incomplete; None = the latest complete span of a data root of spans, or the
        plain folder.
      max_train_examples: keep only the first N training examples (None = all 60,000).
      max_eval_examples: keep only the first N test examples (None = all 10,000).
      tfds_download: "tfds" only: download and prepare mnist when absent (needs network).
    """
    options = executor.Options(source=source, max_train_examples=max_train_examples,
                               max_eval_examples=max_eval_examples, tfds_download=tfds_download)
    if span is not None and (isinstance(span, bool) or not isinstance(span, int) or span < 0):
      raise ValueError(f"span must be None or an int >= 0, got {span!r}")
    if span is not None and source != "idx":
      raise ValueError(f"span applies to source 'idx' only, got source {source!r}")
    # The only file-system read at construction: a listing of data_dir, to tell the layouts apart.
    spans = source == "idx" and (span is not None or bool(idx.list_spans(data_dir)))
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=split_name, pattern=pattern)
        for split_name, pattern in executor.input_patterns(source, spans).items()
    ])
    range_config = None
    if span is not None:
      range_config = range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
          start_span_number=span, end_span_number=span))
    super().__init__(input_base=data_dir, input_config=input_config, range_config=range_config,
                     custom_config=executor.make_custom_config(options))
