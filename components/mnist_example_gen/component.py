"""MnistExampleGen: a FileBasedExampleGen that reads MNIST and keeps its train/test split."""

from typing import Optional

from tfx.components.example_gen import component
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.mnist_example_gen import executor


class MnistExampleGen(component.FileBasedExampleGen):
  """Emits MNIST as tf.Examples: split 'train' from MNIST train, split 'eval' from MNIST test.

  Features: `image` (784 int64 pixels 0-255, row-major 28x28) and `label` (one int64 0-9).
  The input split patterns name the data files, so the driver's fingerprint of them gives a cache
  hit when `data_dir` is unchanged and a new run when its files change.
  """

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self,
               data_dir: str,
               source: str = "idx",
               max_train_examples: Optional[int] = None,
               max_eval_examples: Optional[int] = None,
               tfds_download: bool = False):
    """Builds the component.

    Args:
      data_dir: "idx": the folder with the four MNIST idx(.gz) files (and optionally SHA256SUMS,
        checked before reading); "tfds": a TFDS data_dir with 'mnist' prepared in it.
      source: "idx" or "tfds".
      max_train_examples: keep only the first N training examples (None = all 60,000).
      max_eval_examples: keep only the first N test examples (None = all 10,000).
      tfds_download: "tfds" only: download and prepare mnist when absent (needs network).
    """
    options = executor.Options(source=source, max_train_examples=max_train_examples,
                               max_eval_examples=max_eval_examples, tfds_download=tfds_download)
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=split_name, pattern=pattern)
        for split_name, pattern in executor.INPUT_PATTERNS[source].items()
    ])
    super().__init__(input_base=data_dir, input_config=input_config,
                     custom_config=executor.make_custom_config(options))
