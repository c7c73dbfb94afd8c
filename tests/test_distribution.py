"""tf.distribute in the diffusion training loop (TrainConfig.distribution), for real.

Each case runs in fresh Python processes: logical devices and TF_CONFIG must be in place before
TensorFlow starts. "mirrored" on two logical CPU devices must take the same step as one device
on the same global batch; two "multi_worker" processes on localhost must end with the same
weights, resume from the chief's checkpoint, and leave an export only where the chief wrote it.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from core import config as config_lib

# Each case starts TensorFlow in new processes and traces a training step there: about a minute
# on 2 cores.
pytestmark = pytest.mark.slow

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 600


def _fixed_draws_trainer_class():
  """A DiffusionTrainer whose noise, times and dropped labels are functions of each example
  alone, so one device and two replicas draw the same for the same global batch (the real
  draws fold in the replica id: different noise on every replica, by design)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from trainer_module import train  # pylint: disable=import-outside-toplevel

  class FixedDrawsTrainer(train.DiffusionTrainer):

    def draw(self, images):
      means = tf.reduce_mean(images, axis=[1, 2, 3])
      dropped = means > 0.0
      diffusion_times = tf.sigmoid(10.0 * means)
      return dropped, diffusion_times, tf.sin(7.0 * images + 1.0)

  return FixedDrawsTrainer


def mirrored_main(out_path: str) -> None:
  """Child process: one step on 1 device vs 2 mirrored replicas; writes a JSON report."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from tests.support import tiny_models  # pylint: disable=import-outside-toplevel
  from trainer_module import train  # pylint: disable=import-outside-toplevel

  strategy = train.distribution_strategy("mirrored")
  config = tiny_models.tiny_pipeline_config()
  trainer_class = _fixed_draws_trainer_class()
  single = trainer_class(config)
  mirrored = trainer_class(config, strategy)
  # The same starting point whatever each strategy's initialisers did.
  mirrored.model.set_weights(single.model.get_weights())
  mirrored.ema_model.set_weights(single.ema_model.get_weights())
  batch = tiny_models.random_batches(1, batch_size=config.train.batch_size)
  images, labels = next(iter(batch))
  single_loss = float(single.train_step(images, labels))
  replica_images, replica_labels = next(iter(strategy.experimental_distribute_dataset(batch)))
  mirrored_loss = float(mirrored.train_step(replica_images, replica_labels))

  def max_difference(first, second):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first.get_weights(),
                                                               second.get_weights()))

  # The real draws: different on each replica, the same again from the same seed.
  def replica_noises():
    trainer = train.DiffusionTrainer(config, strategy)
    draws = strategy.run(trainer.draw, args=(replica_images,))
    return [noise.numpy() for noise in strategy.experimental_local_results(draws[2])]

  noises, noises_again = replica_noises(), replica_noises()
  report = {
      "replicas": strategy.num_replicas_in_sync,
      "replica_batch_sizes": [int(x.shape[0])
                              for x in strategy.experimental_local_results(replica_images)],
      "single_loss": single_loss, "mirrored_loss": mirrored_loss,
      "model_max_difference": max_difference(single.model, mirrored.model),
      "ema_max_difference": max_difference(single.ema_model, mirrored.ema_model),
      "weights_changed": max_difference(single.model, trainer_class(config).model) > 0,
      "replica_noises_differ": not np.array_equal(noises[0], noises[1]),
      "noises_reproducible": all(np.array_equal(a, b) for a, b in zip(noises, noises_again)),
  }
  with open(out_path, "w") as f:
    json.dump(report, f)


def multi_worker_main(root: str) -> None:
  """Child process: one worker of a TF_CONFIG cluster; trains the tiny model for its 6 steps,
  exports, then resumes from the chief's step-3 checkpoint and trains to 6 again."""
  from tests.support import tiny_models  # pylint: disable=import-outside-toplevel
  from trainer_module import train  # pylint: disable=import-outside-toplevel
  strategy = train.distribution_strategy("multi_worker")
  index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
  config = tiny_models.tiny_pipeline_config()
  # One copy of the network in the served graph: the chief's export traces in half the time.
  config = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler,
                                                                   network_copies=1))
  trainer = train.DiffusionTrainer(config, strategy)
  batches = tiny_models.random_batches(6, batch_size=config.train.batch_size)
  checkpoint_dir = os.path.join(root, "checkpoints")
  worker_dir = os.path.join(root, f"worker{index}")
  summary, exported = train.train_and_export(
      trainer, batches, checkpoint_dir, os.path.join(worker_dir, "model", "Format-Serving"),
      log_dir=os.path.join(worker_dir, "logs"))
  trained = trainer.model.get_weights() + trainer.ema_model.get_weights()
  trainer.checkpoint().restore(os.path.join(checkpoint_dir, "ckpt-3"))
  restored_step = int(trainer.step.numpy())
  train.train_diffusion(trainer, batches, os.path.join(root, "resumed_checkpoints"))
  resumed = trainer.model.get_weights() + trainer.ema_model.get_weights()
  np.savez(os.path.join(root, f"worker{index}_trained.npz"), *trained)
  np.savez(os.path.join(root, f"worker{index}_resumed.npz"), *resumed)
  with open(os.path.join(root, f"worker{index}.json"), "w") as f:
    json.dump({"replicas": strategy.num_replicas_in_sync, "chief": train.is_chief(strategy),
               "exported": exported, "steps": summary["steps"], "loss": summary["final_loss"],
               "restored_step": restored_step}, f)


def _child(function: str, argument: str, env=None) -> subprocess.Popen:
  code = f"from tests import test_distribution as t; t.{function}({argument!r})"
  return subprocess.Popen([sys.executable, "-c", code], cwd=_REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(process: subprocess.Popen) -> None:
  output, _ = process.communicate(timeout=_TIMEOUT_S)
  assert process.returncode == 0, output[-4000:]


def _free_ports(count: int):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _load(path):
  with np.load(path) as arrays:
    return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def test_distribution_is_validated():
  with pytest.raises(ValueError, match="train.distribution"):
    config_lib.TrainConfig(distribution="parameter_server")


def test_mirrored_step_on_two_devices_equals_one_device_step(tmp_path):
  out_path = str(tmp_path / "mirrored.json")
  _wait(_child("mirrored_main", out_path))
  with open(out_path) as f:
    report = json.load(f)
  assert report["replicas"] == 2
  assert report["replica_batch_sizes"] == [2, 2]  # the global batch of 4, split
  assert report["weights_changed"]
  assert report["mirrored_loss"] == pytest.approx(report["single_loss"], rel=1e-5)
  assert report["model_max_difference"] < 1e-5
  assert report["ema_max_difference"] < 1e-5
  assert report["replica_noises_differ"]
  assert report["noises_reproducible"]


def test_two_workers_train_the_same_weights_and_only_the_chief_exports(tmp_path):
  root = str(tmp_path)
  workers = [f"localhost:{port}" for port in _free_ports(2)]
  processes = []
  for index in range(2):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                   "task": {"type": "worker", "index": index}})
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    processes.append(_child("multi_worker_main", root, env))
  try:
    for process in processes:
      _wait(process)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  reports = []
  for index in range(2):
    with open(os.path.join(root, f"worker{index}.json")) as f:
      reports.append(json.load(f))
  assert [r["replicas"] for r in reports] == [2, 2]
  assert [r["chief"] for r in reports] == [True, False]
  assert [r["exported"] for r in reports] == [True, False]
  assert [r["steps"] for r in reports] == [6, 6]
  assert reports[0]["loss"] == reports[1]["loss"]
  for name in ("trained", "resumed"):
    first, second = (_load(os.path.join(root, f"worker{i}_{name}.npz")) for i in range(2))
    for a, b in zip(first, second):
      np.testing.assert_array_equal(a, b)
  # Resumed from the chief's step-3 checkpoint on both workers, the same 3 steps again.
  assert [r["restored_step"] for r in reports] == [3, 3]
  for a, b in zip(_load(os.path.join(root, "worker0_trained.npz")),
                  _load(os.path.join(root, "worker0_resumed.npz"))):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  # Only the chief wrote: its export, its training state, its checkpoints and summaries.
  chief_model = os.path.join(root, "worker0", "model")
  assert os.path.exists(os.path.join(chief_model, "Format-Serving", "saved_model.pb"))
  assert os.path.exists(os.path.join(chief_model, "training_state", "network.json"))
  assert not os.path.exists(os.path.join(root, "worker1"))
  assert tf_checkpoint_numbers(os.path.join(root, "checkpoints")) == [3, 6]
  assert tf_checkpoint_numbers(os.path.join(root, "resumed_checkpoints")) == [6]


def tf_checkpoint_numbers(checkpoint_dir):
  with open(os.path.join(checkpoint_dir, "checkpoint")) as f:
    lines = [line for line in f if line.startswith("all_model_checkpoint_paths")]
  return [int(line.strip().strip('"').rsplit("-", 1)[1]) for line in lines]
