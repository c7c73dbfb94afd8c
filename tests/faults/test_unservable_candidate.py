"""A candidate that cannot be served: an export broken for real (its variables file deleted, or a
signature renamed in saved_model.pb), blessed by the Evaluator's metrics, is stopped by the
ServabilityGate (loaded in a fresh TensorFlow-only process, as TF Serving would), and the
AtomicPusher then pushes nothing: the serving dir, holding a good version, is byte-for-byte
unchanged. The renamed signature is one the Evaluator cannot see: TF2's loader still finds it."""

import hashlib
import os
import shutil

import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tfx.types import standard_artifacts

from components.servability_gate import executor as gate_executor
from core import serving_contract
from tests.support import pusher


def _delete_variables_data(saved_model_dir):
  os.remove(os.path.join(saved_model_dir, "variables", "variables.data-00000-of-00001"))


def _rename_denoise_signature(saved_model_dir):
  path = os.path.join(saved_model_dir, "saved_model.pb")
  saved_model = saved_model_pb2.SavedModel()
  with open(path, "rb") as f:
    saved_model.ParseFromString(f.read())
  signatures = saved_model.meta_graphs[0].signature_def
  signatures["denoise_v2"].CopyFrom(signatures[serving_contract.DENOISE_SIGNATURE])
  del signatures[serving_contract.DENOISE_SIGNATURE]
  with open(path, "wb") as f:
    f.write(saved_model.SerializeToString())


# (how the export is broken, what the gate's reason must name)
BREAKAGES = {
    "missing_variables_file": (_delete_variables_data, "variables.data-00000-of-00001"),
    "renamed_signature": (_rename_denoise_signature, "no signature 'denoise'"),
}


def _tree(directory):
  """{relative path: sha256} of every file under `directory`, and every folder (value None)."""
  listing = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs:
      listing[os.path.relpath(os.path.join(root, name), directory)] = None
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        listing[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return listing


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_an_unservable_candidate_blessed_by_its_metrics_is_not_pushed(
    tmp_path, smoke_export_dir, breakage):
  break_export, named_in_reason = BREAKAGES[breakage]
  # The serving dir holds a good version, as after an earlier run.
  serving_dir = str(tmp_path / "serving")
  shutil.copytree(smoke_export_dir, os.path.join(serving_dir, "1"))
  before = _tree(serving_dir)

  model = standard_artifacts.Model()
  model.uri = str(tmp_path / "model")
  shutil.copytree(smoke_export_dir, os.path.join(model.uri, "Format-Serving"))
  break_export(os.path.join(model.uri, "Format-Serving"))
  if breakage == "renamed_signature":
    # TF2's loader, the Evaluator's, reads the object graph and still finds both signatures:
    # only TF Serving's view (signature_def) has lost `denoise`.
    loaded = tf.saved_model.load(os.path.join(model.uri, "Format-Serving"))
    assert {serving_contract.SERVING_SIGNATURE, serving_contract.DENOISE_SIGNATURE} <= set(
        loaded.signatures)
  model_blessing = pusher.model_blessing(str(tmp_path / "model_blessing"))  # metrics passed

  infra_blessing = standard_artifacts.InfraBlessing()
  infra_blessing.uri = str(tmp_path / "infra_blessing")
  gate_executor.Executor().Do(
      {gate_executor.MODEL_KEY: [model]}, {gate_executor.BLESSING_KEY: [infra_blessing]},
      {gate_executor.TIMEOUT_KEY: 300})
  reason = infra_blessing.get_string_custom_property(gate_executor.REASON_PROPERTY)
  assert infra_blessing.get_int_custom_property(gate_executor.BLESSED_PROPERTY) == 0, reason
  assert os.path.exists(os.path.join(infra_blessing.uri, gate_executor.NOT_BLESSED_FILE))
  assert named_in_reason in reason

  pushed = pusher.push(model, model_blessing, serving_dir, str(tmp_path / "pushed"),
                       infra_blessing=infra_blessing)

  assert pushed.get_int_custom_property("pushed") == 0
  assert not os.path.exists(pushed.uri) or not os.listdir(pushed.uri)
  assert _tree(serving_dir) == before
  assert serving_contract.latest_version_dir(serving_dir) == os.path.join(serving_dir, "1")
