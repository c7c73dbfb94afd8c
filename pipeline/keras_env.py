"""The project's one Keras decision: tf_keras (Keras 2) everywhere.

TFT sets TF_USE_LEGACY_KERAS=1 when imported and TFMA 0.47 expects tf_keras metrics, so mixing in
Keras 3 would give two incompatible layer hierarchies in one process. Every package of this project
imports this module from its __init__, before anything imports TensorFlow; code that needs Keras
imports `tf_keras`, never `keras`.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
