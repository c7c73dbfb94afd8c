"""components package."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)
