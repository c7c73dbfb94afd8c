"""serving.model_server: the models.config text proto and the docker command line."""

import os

from google.protobuf import text_format
import pytest
from tensorflow_serving.config import model_server_config_pb2

from serving import model_server


def _parse_config(text):
  return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def test_models_config_file_parses_with_the_right_fields(tmp_path):
  path = str(tmp_path / "conf" / "models.config")
  assert model_server.write_models_config(path, "mnist_diffusion",
                                          "/models/mnist_diffusion") == path
  with open(path) as f:
    config = _parse_config(f.read())
  assert config.WhichOneof("config") == "model_config_list"
  (model,) = config.model_config_list.config
  assert model.name == "mnist_diffusion"
  assert model.base_path == "/models/mnist_diffusion"
  assert model.model_platform == "tensorflow"
  assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
  assert model.model_version_policy.latest.num_versions == 1


def test_docker_run_command(tmp_path):
  serving_dir = str(tmp_path / "serving_model")
  assert model_server.docker_run_command(serving_dir, "mnist_diffusion") == (
      "docker run -p 8501:8501 -p 8500:8500 "
      f"--mount type=bind,source={serving_dir},target=/models/mnist_diffusion "
      "-e TF_ENABLE_ONEDNN_OPTS=1 -e MODEL_NAME=mnist_diffusion -t tensorflow/serving")


def test_docker_run_command_absolute_paths_and_config(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  command = model_server.docker_run_command("runs/serving_model", "m", "models.config")
  assert f"source={tmp_path}/runs/serving_model,target=/models/m " in command
  assert (f"--mount type=bind,source={tmp_path}/models.config,target=/models/models.config"
          in command)
  assert command.endswith("-t tensorflow/serving --model_config_file=/models/models.config")


def test_cli_prints_command_and_writes_config(tmp_path, capsys):
  serving_dir = tmp_path / "serving_model"
  serving_dir.mkdir()
  config_path = str(tmp_path / "models.config")
  assert model_server.main(["--serving-dir", str(serving_dir), "--model-name", "digits",
                            "--write-config", config_path]) == 0
  out = capsys.readouterr().out.strip()
  assert out == model_server.docker_run_command(str(serving_dir), "digits", config_path)
  with open(config_path) as f:
    (model,) = _parse_config(f.read()).model_config_list.config
  assert (model.name, model.base_path) == ("digits", "/models/digits")


def test_cli_rejects_missing_serving_dir(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    model_server.main(["--serving-dir", os.path.join(str(tmp_path), "missing")])
  assert exit_info.value.code == 2
  assert "is not a directory" in capsys.readouterr().err
