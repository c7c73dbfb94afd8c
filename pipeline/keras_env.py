"""What TensorFlow must see before it is imported: tf_keras (Keras 2) and oneDNN, everywhere.

Keras: TFT sets TF_USE_LEGACY_KERAS=1 when imported and TFMA 0.47 expects tf_keras metrics, so
mixing in Keras 3 would give two incompatible layer hierarchies in one process. Code that needs
Keras imports `tf_keras`, never `keras`.

oneDNN: TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512_VNNI or newer;
on an AVX2-only CPU they train the U-Net 1.2-1.4x faster, while its forward pass alone does not
move (README, "Training speed against the machine"). `setdefault`, so TF_ENABLE_ONEDNN_OPTS=0
still turns them off.

Every package of this project imports this module from its __init__, before anything imports
TensorFlow; both variables are read once, when TensorFlow loads.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
