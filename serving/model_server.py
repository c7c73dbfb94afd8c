"""Running TF Serving on the pushed model: its models.config and the Docker command line.

CLI:
  python -m serving.model_server --serving-dir runs/serving_model --model-name mnist_diffusion \
      [--write-config models.config]
prints the `docker run` command serving `<serving-dir>/<version>/` on ports 8501 (REST) and
8500 (gRPC).
"""

import argparse
import os
import shlex
import sys
from typing import Optional, Sequence

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

# serving.client.DEFAULT_MODEL_NAME, repeated: importing the client would import TensorFlow.
DEFAULT_MODEL_NAME = "mnist_diffusion"
DOCKER_IMAGE = "tensorflow/serving"
REST_PORT = 8501
GRPC_PORT = 8500
# Where the image looks for models, and where the config file is mounted beside them.
CONTAINER_MODELS_DIR = "/models"
CONTAINER_CONFIG_PATH = f"{CONTAINER_MODELS_DIR}/models.config"
# TF Serving's TensorFlow reads the same switch as core/environment.py (oneDNN kernels, off by
# default on CPUs older than AVX512_VNNI): the server then runs the kernels the Evaluator scored the
# model with (docs/design.md#onednn).
CONTAINER_ENV = {"TF_ENABLE_ONEDNN_OPTS": "1"}


def container_base_path(model_name: str) -> str:
  """The model's directory inside the container: the docker command mounts the serving dir there."""
  return f"{CONTAINER_MODELS_DIR}/{model_name}"


def models_config(model_name: str,
                  base_path: str) -> model_server_config_pb2.ModelServerConfig:
  """One TensorFlow model that serves only its latest version (the Pusher's highest number)."""
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add()
  model.name = model_name
  model.base_path = base_path
  model.model_platform = "tensorflow"
  model.model_version_policy.latest.num_versions = 1
  return config


def models_config_text(model_name: str, base_path: str) -> str:
  """models_config(...) as the text proto that `--model_config_file` reads."""
  return text_format.MessageToString(models_config(model_name, base_path))


def write_models_config(path: str, model_name: str, base_path: str) -> str:
  """Writes the models.config text proto to `path` and returns `path`.

  `base_path` is read by the server, so inside Docker it is the container path
  (`container_base_path(model_name)`), not the host's serving dir.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, "w") as f:
    f.write(models_config_text(model_name, base_path))
  return path


def docker_run_command(serving_dir: str, model_name: str,
                       models_config_path: Optional[str] = None) -> str:
  """The `docker run` command serving `serving_dir` (numeric versions inside) as `model_name`.

  Docker bind mounts need absolute host paths, hence abspath. With `models_config_path` the config
  is mounted too and passed to the server, which then ignores MODEL_NAME.
  """
  parts = ["docker", "run",
           "-p", f"{REST_PORT}:{REST_PORT}", "-p", f"{GRPC_PORT}:{GRPC_PORT}",
           "--mount", (f"type=bind,source={os.path.abspath(serving_dir)},"
                       f"target={container_base_path(model_name)}")]
  if models_config_path is not None:
    parts += ["--mount", (f"type=bind,source={os.path.abspath(models_config_path)},"
                          f"target={CONTAINER_CONFIG_PATH}")]
  for name, value in CONTAINER_ENV.items():
    parts += ["-e", f"{name}={value}"]
  parts += ["-e", f"MODEL_NAME={model_name}", "-t", DOCKER_IMAGE]
  if models_config_path is not None:
    parts.append(f"--model_config_file={CONTAINER_CONFIG_PATH}")
  return " ".join(shlex.quote(part) for part in parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m serving.model_server",
      description="Prints the docker command serving the pushed model with TF Serving.")
  parser.add_argument("--serving-dir", required=True,
                      help="the Pusher's base directory, holding numeric versions")
  parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
  parser.add_argument("--write-config", metavar="PATH",
                      help="also write a models.config there and use it in the command")
  args = parser.parse_args(argv)
  if not os.path.isdir(args.serving_dir):
    parser.error(f"--serving-dir {args.serving_dir} is not a directory")
  if args.write_config:
    write_models_config(args.write_config, args.model_name, container_base_path(args.model_name))
    print(f"# Wrote {args.write_config}", file=sys.stderr)
  print(docker_run_command(args.serving_dir, args.model_name, args.write_config))
  return 0


if __name__ == "__main__":
  sys.exit(main())
