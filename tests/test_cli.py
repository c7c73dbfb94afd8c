"""pipeline.run: flags map onto the config; --help works without importing TFX."""

import os

import pytest

from core import config as config_lib
from pipeline import run as run_lib


def test_defaults_are_the_cpu_profile_on_embedded_mnist():
  config = run_lib.config_from_args(run_lib.parse_args([]))
  assert config.profile == "cpu"
  assert config.data.data_dir == config_lib.EMBEDDED_MNIST_DIR
  assert config.data.source == "idx"
  assert config.pipeline_root == os.path.join("runs", "cpu", "pipeline_root")
  assert config.serving_dir == os.path.join("runs", "cpu", "serving_model")
  assert config.enable_cache


def test_flags_override_the_profile():
  args = run_lib.parse_args([
      "--profile", "smoke", "--data-dir", "/data/tfds", "--source", "tfds", "--pipeline-root",
      "/p", "--serving-dir", "/s", "--metadata-path", "/m.sqlite", "--no-cache", "--runner", "beam",
      "--beam-arg=--direct_num_workers=2"])
  config = run_lib.config_from_args(args)
  assert (config.profile, config.data.data_dir, config.data.source) == ("smoke", "/data/tfds", "tfds")
  assert config.data.max_train_examples == config_lib.profile("smoke").data.max_train_examples
  assert (config.pipeline_root, config.serving_dir, config.metadata_sqlite) == ("/p", "/s", "/m.sqlite")
  assert not config.enable_cache
  # Pass-through args come after the (in-memory) preset's; Beam keeps a flag's last value.
  assert config.beam_pipeline_args == (
      config_lib.profile("smoke").beam_pipeline_args + ("--direct_num_workers=2",))
  assert args.runner == "beam"


def test_help_exits_cleanly(capsys):
  with pytest.raises(SystemExit) as exit_info:
    run_lib.parse_args(["--help"])
  assert exit_info.value.code == 0
  assert "--profile" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--profile", "huge"], ["--runner", "kubeflow"]])
def test_bad_choices_are_rejected(argv):
  with pytest.raises(SystemExit) as exit_info:
    run_lib.parse_args(argv)
  assert exit_info.value.code == 2


def test_find_outputs_picks_latest_version_and_evaluation(tmp_path):
  config = config_lib.PipelineConfig(pipeline_root=str(tmp_path / "root"),
                                     serving_dir=str(tmp_path / "serving"))
  for version in ("9", "10", "11", "notes"):
    os.makedirs(tmp_path / "serving" / version)
  for version in ("9", "10"):  # 11 is incomplete: no SavedModel, as TF Serving would skip it
    (tmp_path / "serving" / version / "saved_model.pb").write_bytes(b"")
  for run_id in ("3", "12"):
    os.makedirs(tmp_path / "root" / "DiffusionEvaluator" / "evaluation" / run_id)
  outputs = run_lib.find_outputs(config)
  assert outputs["pushed_model"].endswith(os.path.join("serving", "10"))
  assert outputs["report"].endswith(os.path.join("evaluation", "12", "report.md"))
