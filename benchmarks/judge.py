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

import tensorflow as tf  # noqa: E402

from benchmarks import sweep  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from pipeline.config import ClassifierConfig  # noqa: E402
from trainer_module import classifier  # noqa: E402


def train_judge(data_dir: str, out_dir: str, config: ClassifierConfig) -> dict:
  """Trains, exports the classifier SavedModel to `out_dir` and returns its test accuracy."""
  model, results = classifier.train_classifier(
      config, sweep.idx_dataset(data_dir, "train", config.batch_size, shuffle_seed=config.seed),
      sweep.idx_dataset(data_dir, "t10k", config.batch_size))
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
