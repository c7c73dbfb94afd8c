"""Maintained measurement tools; each writes its figures and the command that made them."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)
