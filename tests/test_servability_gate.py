"""ServabilityGate's executor on temporary artifacts: a candidate is blessed only when it loads in a
fresh TensorFlow-only process and answers its warm-up and signature requests; the InfraBlessing
follows TFX's InfraValidator convention, and the AtomicPusher honours it."""

import json
import os
import shutil

import pytest
from tensorflow.core.protobuf import saved_model_pb2
from tfx.components.infra_validator import executor as tfx_infra_executor
from tfx.components.util import model_utils
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx import v1 as tfx

from components.servability_gate import executor
from components.servability_gate.component import ServabilityGate
from core import serving_contract
from tests.support import pusher

TIMEOUT_S = 300


def candidate(root, export_dir, name="model"):
  """A Model artifact whose Format-Serving dir is a copy of `export_dir` (free to break)."""
  model = standard_artifacts.Model()
  model.uri = str(root / name)
  shutil.copytree(export_dir, os.path.join(model.uri, "Format-Serving"))
  return model


def serving_dir_of(model):
  return os.path.join(model.uri, "Format-Serving")


def rename_signature(saved_model_dir, old, new):
  """Renames a signature in saved_model.pb: TF Serving's view of the model (signature_def)."""
  path = os.path.join(saved_model_dir, "saved_model.pb")
  saved_model = saved_model_pb2.SavedModel()
  with open(path, "rb") as f:
    saved_model.ParseFromString(f.read())
  signatures = saved_model.meta_graphs[0].signature_def
  signatures[new].CopyFrom(signatures[old])
  del signatures[old]
  with open(path, "wb") as f:
    f.write(saved_model.SerializeToString())


def run_gate(root, model, name="blessing"):
  """Runs the executor's Do(); returns the InfraBlessing and its report."""
  blessing = standard_artifacts.InfraBlessing()
  blessing.uri = str(root / name)
  executor.Executor().Do({executor.MODEL_KEY: [model]}, {executor.BLESSING_KEY: [blessing]},
                         {executor.TIMEOUT_KEY: TIMEOUT_S})
  with open(os.path.join(blessing.uri, executor.REPORT_FILE)) as f:
    return blessing, json.load(f)


def assert_not_blessed(blessing, report):
  assert blessing.get_int_custom_property(executor.BLESSED_PROPERTY) == 0
  assert not model_utils.is_infra_validated(blessing)
  assert os.path.exists(os.path.join(blessing.uri, executor.NOT_BLESSED_FILE))
  assert not os.path.exists(os.path.join(blessing.uri, executor.BLESSED_FILE))
  assert report["blessed"] is False
  assert blessing.get_string_custom_property(executor.REASON_PROPERTY) == report["reason"]


def test_the_infra_blessing_follows_tfx_infra_validator():
  # The names TFX's InfraValidator writes and its Pusher reads.
  # pylint: disable=protected-access
  assert executor.BLESSED_FILE == tfx_infra_executor._BLESSED_FILENAME
  assert executor.NOT_BLESSED_FILE == tfx_infra_executor._NOT_BLESSED_FILENAME
  assert executor.BLESSED_PROPERTY == tfx_infra_executor._BLESSED_KEY
  assert executor.BLESSING_KEY == standard_component_specs.BLESSING_KEY
  gate = ServabilityGate(model=tfx.dsl.Channel(type=standard_artifacts.Model), timeout_seconds=5)
  assert gate.outputs[executor.BLESSING_KEY].type is standard_artifacts.InfraBlessing
  with pytest.raises(ValueError, match="timeout_seconds"):
    ServabilityGate(model=tfx.dsl.Channel(type=standard_artifacts.Model), timeout_seconds=0)


def test_a_good_export_is_blessed_after_its_warmup_and_one_request_per_signature(
    tmp_path, smoke_export_dir):
  blessing, report = run_gate(tmp_path, candidate(tmp_path, smoke_export_dir))
  assert blessing.get_int_custom_property(executor.BLESSED_PROPERTY) == 1, report["reason"]
  assert model_utils.is_infra_validated(blessing)
  assert os.path.exists(os.path.join(blessing.uri, executor.BLESSED_FILE))
  assert not os.path.exists(os.path.join(blessing.uri, executor.NOT_BLESSED_FILE))
  assert report["problems"] == []
  assert report["project_modules"] == []  # the fresh process imported nothing of the project
  assert report["signatures"] == sorted([serving_contract.SERVING_SIGNATURE,
                                         serving_contract.DENOISE_SIGNATURE])
  replayed = [(r["source"], r["signature"]) for r in report["requests"]]
  assert replayed == [("warm-up", serving_contract.SERVING_SIGNATURE),
                      ("signature", serving_contract.SERVING_SIGNATURE),
                      ("signature", serving_contract.DENOISE_SIGNATURE)]
  warmup_outputs = report["requests"][0]["outputs"]
  assert warmup_outputs[serving_contract.IMAGES_OUTPUT] == [[10, 28, 28, 1], "uint8"]
  assert "warm-up" in report["reason"]


def test_a_missing_variables_file_is_not_blessed_and_the_reason_names_it(
    tmp_path, smoke_export_dir):
  model = candidate(tmp_path, smoke_export_dir)
  os.remove(os.path.join(serving_dir_of(model), "variables",
                         "variables.data-00000-of-00001"))
  blessing, report = run_gate(tmp_path, model)
  assert_not_blessed(blessing, report)
  assert report["loaded"] is False
  assert "variables.data-00000-of-00001" in report["reason"]
  assert report["reason"].startswith("servability gate: loading ")


def test_renamed_signatures_are_not_blessed_and_the_reason_names_each(tmp_path, smoke_export_dir):
  model = candidate(tmp_path, smoke_export_dir)
  rename_signature(serving_dir_of(model), serving_contract.SERVING_SIGNATURE, "generate")
  rename_signature(serving_dir_of(model), serving_contract.DENOISE_SIGNATURE, "denoise_v2")
  blessing, report = run_gate(tmp_path, model)
  assert_not_blessed(blessing, report)
  assert report["loaded"] is True
  # The warm-up record asks for serving_default, as do the contract's requests; what the model
  # has instead is named.
  assert "warm-up request 0 (signature 'serving_default'): the model has no signature" in (
      report["reason"])
  assert "signature request 1 (signature 'denoise'): the model has no signature" in (
      report["reason"])
  assert "['denoise_v2', 'generate']" in report["reason"]
  assert report["requests"] == []


def test_a_timeout_is_not_blessed_and_says_which_limit(tmp_path, smoke_export_dir):
  model = candidate(tmp_path, smoke_export_dir)
  requests_file = str(tmp_path / "requests.tfrecord")
  executor.write_requests(requests_file, executor.signature_requests())
  result = executor.check_servability(serving_dir_of(model), requests_file, timeout_seconds=1)
  assert result["blessed"] is False
  assert "within 1 s (serving.servability_timeout_s)" in result["reason"]


def _push(root, model, infra_blessed, serving_dir):
  """AtomicPusher's Do() with an Evaluator blessing and an InfraBlessing of the given verdict."""
  infra_blessing = standard_artifacts.InfraBlessing()
  infra_blessing.uri = str(root / f"infra_blessing_{infra_blessed}")
  fileio.makedirs(infra_blessing.uri)
  infra_blessing.set_int_custom_property(executor.BLESSED_PROPERTY, int(infra_blessed))
  return pusher.push(model, pusher.model_blessing(str(root / "model_blessing")), serving_dir,
                     str(root / f"pushed_{infra_blessed}"), infra_blessing=infra_blessing)


def test_the_atomic_pusher_pushes_only_with_an_infra_blessing(tmp_path):
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / "model")
  os.makedirs(os.path.join(model.uri, "Format-Serving", "variables"))
  with open(os.path.join(model.uri, "Format-Serving", "saved_model.pb"), "wb") as f:
    f.write(b"graph")
  serving_dir = str(tmp_path / "serving")

  refused = _push(tmp_path, model, infra_blessed=False, serving_dir=serving_dir)
  assert refused.get_int_custom_property("pushed") == 0
  assert serving_contract.numeric_versions(serving_dir) == []

  pushed = _push(tmp_path, model, infra_blessed=True, serving_dir=serving_dir)
  assert pushed.get_int_custom_property("pushed") == 1
  assert len(serving_contract.numeric_versions(serving_dir)) == 1
