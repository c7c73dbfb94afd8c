"""The pipeline definition, its configuration and its runners."""

from pipeline import keras_env  # noqa: F401  (must run before TensorFlow is imported)
