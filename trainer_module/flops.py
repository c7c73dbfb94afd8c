"""What the machine can do and what the U-Net costs: the FLOP yardsticks that training and the
benchmarks report their speed against (achieved FLOP/s as a share of the measured matmul rate)."""

import functools
import time

import tensorflow as tf
from tensorflow.python.profiler import model_analyzer
from tensorflow.python.profiler import option_builder

from core.config import IMAGE_SIZE

# A training step costs about three forward passes: the forward, and the backward pass for the
# activations and for the weights.
TRAIN_PASSES_PER_STEP = 3.0


# Measured once per process (seconds of matmuls): a resumed or repeated training loop reuses it.
@functools.lru_cache(maxsize=None)
def matmul_flops_per_second(size: int = 1024, repeats: int = 20) -> float:
  """Measured float32 matmul rate (FLOP/s) of this machine: the ceiling a dense model can reach."""
  a = tf.random.normal([size, size])
  b = tf.random.normal([size, size])

  @tf.function
  def chain(x):
    for _ in range(repeats):
      x = tf.matmul(x, b) * 1e-3
    return x

  chain(a).numpy()  # trace and warm up
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    chain(a).numpy()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 * repeats / best


def forward_flops(model, batch_size: int = 1) -> float:
  """FLOPs of one forward pass of the U-Net (inputs: noisy images, times, labels), counted by
  TensorFlow's profiler on the traced graph."""
  @tf.function(autograph=False)
  def forward(images, times, labels):
    return model([images, times, labels], training=False)

  concrete = forward.get_concrete_function(
      tf.TensorSpec([batch_size, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32),
      tf.TensorSpec([batch_size], tf.float32), tf.TensorSpec([batch_size], tf.int32))
  options = option_builder.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  profile = model_analyzer.profile(concrete.graph, options=options)
  return float(profile.total_float_ops)


def train_flops_per_image(model) -> float:
  return TRAIN_PASSES_PER_STEP * forward_flops(model, 1)
