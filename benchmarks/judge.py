"""Trains the pipeline's judge classifier on the idx files alone, for benchmarks run without a pipeline.

  python -m benchmarks.judge --out runs/judge [--data-dir DIR]
The same network, settings and export as the classifier Trainer (trainer_module/classifier.py),
fed from the idx files instead of Transform's examples, so `benchmarks.sweep --classifier-dir
runs/judge` works on a clean checkout. Its batches come in another order than the Trainer's, so
its scores are close to, not the same as, those of a pipeline's judge: compare rows scored by the
same judge only.
"""

from pipeline import keras_env  # noqa: F401  (before TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from components.mnist_example_gen import idx  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from pipeline.config import ClassifierConfig  # noqa: E402
from trainer_module import classifier  # noqa: E402
from trainer_module import transform  # noqa: E402


def idx_dataset(data_dir: str, split: str, config: ClassifierConfig, repeat: bool) -> tf.data.Dataset:
  """Batches of (images in [-1, 1] [B, 28, 28, 1], labels int32 [B]) from one idx split."""
  images, labels = idx.load_split(data_dir, split)
  dataset = tf.data.Dataset.from_tensor_slices((images[..., None], labels.astype(np.int32)))
  if repeat:
    dataset = dataset.shuffle(len(labels), seed=config.seed).repeat()
  return (dataset.map(lambda image, label: (transform.scale_pixels(image), label))
          .batch(config.batch_size).prefetch(2))


def train_judge(data_dir: str, out_dir: str, config: ClassifierConfig) -> dict:
  """Trains, exports the classifier SavedModel to `out_dir` and returns its test accuracy."""
  model, results = classifier.train_classifier(
      config, idx_dataset(data_dir, "train", config, repeat=True),
      idx_dataset(data_dir, "t10k", config, repeat=False))
  module = classifier.ClassifierModule(model)
  tf.saved_model.save(module, out_dir,
                      signatures={"serving_default": module.serving_default.get_concrete_function()})
  with open(os.path.join(out_dir, "classifier_eval.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="where the classifier SavedModel goes")
  parser.add_argument("--data-dir", default=config_lib.EMBEDDED_MNIST_DIR)
  args = parser.parse_args(argv)
  results = train_judge(args.data_dir, args.out, config_lib.profile("cpu").classifier)
  print(json.dumps(results))


if __name__ == "__main__":
  main()
