"""What TensorFlow must see before it is imported: tf_keras (Keras 2) and oneDNN, everywhere.

Keras: TFT sets TF_USE_LEGACY_KERAS=1 when imported and TFMA 0.47 expects tf_keras metrics, so
mixing in Keras 3 would give two incompatible layer hierarchies in one process. Code that needs
Keras imports `tf_keras`, never `keras`.

oneDNN: TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512_VNNI or newer;
they train the U-Net faster on AVX2-only CPUs too (docs/design.md#onednn). `setdefault`, so
TF_ENABLE_ONEDNN_OPTS=0 still turns them off.

Every package of this project imports this module from its __init__, before anything imports
TensorFlow; both variables are read once, when TensorFlow loads.

One warning is filtered here for the same reason, that it must be in place before the imports:
from 2026-10, google-api-core warns, once per Google Cloud package that TFX imports (over a dozen
lines per process), that Python 3.11 reaches its end of life in 2027-10. tfx 1.16 keeps this
project on 3.11, so the notice is known and would bury the pipeline's
progress lines. Its end-of-life warning, a different message, still shows.
"""

import os
import warnings

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
_PYTHON_VERSION_NOTICE = r"You are using a Python version .* which Google will stop supporting"
warnings.filterwarnings("ignore", message=_PYTHON_VERSION_NOTICE, category=FutureWarning)
