"""The pipeline definition, its configuration and its runners."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)
