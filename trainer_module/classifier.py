"""The judge: a small MNIST CNN trained by a second Trainer, used by the Evaluator.

Exported signature `serving_default(images float32 [N, 28, 28, 1] in [0, 1])` -> logits,
probabilities and `features` (the penultimate layer, on which Frechet distance is computed).
"""

import json
import math
import os

import tensorflow as tf
import tf_keras as keras
from absl import logging

from core.config import IMAGE_SIZE, NUM_CLASSES, ClassifierConfig
from trainer_module import data as data_lib
from trainer_module import transform
from trainer_module.train import NonFiniteLossError, config_from_custom_config


def build_classifier(config: ClassifierConfig) -> keras.Model:
  """CNN on model-space images [-1, 1]; outputs (logits, features)."""
  images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="images")
  x = images
  for filters in config.filters:
    for _ in range(config.convs_per_level):
      x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
  x = keras.layers.Flatten()(x)
  if config.dropout:
    x = keras.layers.Dropout(config.dropout)(x)
  features = keras.layers.Dense(config.feature_dim, activation="relu", name="features")(x)
  # The second dropout comes after `features`, so what Frechet distance reads at inference is
  # the layer's own output (dropout is off outside training anyway).
  head_input = keras.layers.Dropout(config.dropout)(features) if config.dropout else features
  logits = keras.layers.Dense(NUM_CLASSES, name="logits")(head_input)
  return keras.Model(images, [logits, features], name="classifier")


class ClassifierModule(tf.Module):
  """Serving wrapper: takes images in [0, 1] like every other consumer of generated images."""

  def __init__(self, model: keras.Model):
    super().__init__(name="classifier")
    self.model_variables = list(model.variables)
    self._model = lambda images: model(images, training=False)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32, name="images")])
  def serving_default(self, images):
    logits, features = self._model(transform.from_unit_range(images))
    return {"logits": logits, "probabilities": tf.nn.softmax(logits), "features": features}


class RaiseOnNonFiniteLoss(keras.callbacks.Callback):
  """Stops `fit` with NonFiniteLossError at the first batch whose loss is NaN or infinite.
  Keras's TerminateOnNaN only ends training, and run_fn would go on to export the model."""

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise NonFiniteLossError(f"classifier loss became {float(loss)} at step {batch + 1}")


def train_classifier(config: ClassifierConfig, train_dataset, eval_dataset=None) -> tuple:
  tf.keras.utils.set_random_seed(config.seed)
  model = build_classifier(config)
  logits_only = keras.Model(model.input, model.output[0])
  logits_only.compile(
      optimizer=keras.optimizers.Adam(
          keras.optimizers.schedules.CosineDecay(config.learning_rate, config.train_steps)),
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"])
  logits_only.fit(train_dataset, steps_per_epoch=config.train_steps, epochs=1, verbose=2,
                  callbacks=[RaiseOnNonFiniteLoss()])
  results = {}
  if eval_dataset is not None:
    loss, accuracy = logits_only.evaluate(eval_dataset, verbose=0)
    results = {"eval_loss": float(loss), "eval_accuracy": float(accuracy)}
    logging.info("Classifier eval: %s", results)
    print(f"[classifier] eval accuracy {accuracy:.4f}", flush=True)
  return model, results


def run_fn(fn_args):
  """TFX Trainer entry point for the judge classifier."""
  config = config_from_custom_config(fn_args.custom_config).classifier
  train_dataset = data_lib.transformed_dataset(
      fn_args.train_files, fn_args.data_accessor, fn_args.transform_output,
      config.batch_size, config.seed)
  eval_dataset = data_lib.transformed_dataset(
      fn_args.eval_files, fn_args.data_accessor, fn_args.transform_output,
      config.batch_size, config.seed, num_epochs=1)
  model, results = train_classifier(config, train_dataset, eval_dataset)
  module = ClassifierModule(model)
  tf.saved_model.save(module, fn_args.serving_model_dir,
                      signatures={"serving_default": module.serving_default.get_concrete_function()})
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "classifier_eval.json"), "w") as f:
    json.dump(results, f, indent=2)
