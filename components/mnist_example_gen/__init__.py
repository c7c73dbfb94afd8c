"""MnistExampleGen: MNIST idx files (or TFDS mnist) into the pipeline as tf.Examples."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)


def __getattr__(name):
  # Imported on first use: TFX takes tens of seconds to import, and `idx` must stay light.
  if name == "MnistExampleGen":
    # pylint: disable-next=g-import-not-at-top
    from components.mnist_example_gen.component import MnistExampleGen
    return MnistExampleGen
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MnistExampleGen"]
