"""What the benchmark tools share: the flags that name a model and the results folder, the model
they measure (re-exported first when a tool is asked to change a sampler setting), and one way to
write a result: JSON that carries the command line that produced it and the machine it ran on."""

import argparse
import contextlib
import json
import os
import shlex
import tempfile
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

from benchmarks import machine
from core import config as config_lib
from core import serving_contract
from serving import reexport

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# Where TFX's Trainer and Pusher put the SavedModel inside a Model artifact.
MODEL_ARTIFACT_SUBDIR = "Format-Serving"


def resolve_model_dir(path: str) -> str:
  """A SavedModel itself, a TFX Model artifact URI (its Format-Serving SavedModel), or a serving
  dir (its latest numeric version, as TF Serving picks it)."""
  artifact_model = os.path.join(path, MODEL_ARTIFACT_SUBDIR)
  if serving_contract.is_saved_model_dir(artifact_model):
    return artifact_model
  return serving_contract.resolve_model_dir(path)


def argument_parser(doc: str) -> argparse.ArgumentParser:
  """An argument parser described by the first line of a tool's docstring."""
  return argparse.ArgumentParser(description=doc.splitlines()[0])


def add_model_dir(parser: argparse.ArgumentParser, flag: str = "--model-dir",
                  what: str = "diffusion sampler") -> None:
  parser.add_argument(flag, required=True,
                       help=f"{what} SavedModel, TFX Model artifact URI, or serving dir (its "
                            "highest numeric version)")


def add_profile(parser: argparse.ArgumentParser, help_text: str) -> None:
  parser.add_argument("--profile", default="cpu", choices=sorted(config_lib.PROFILES),
                      help=help_text)


def add_results_dir(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--results-dir", default=RESULTS_DIR,
                       help="where the result files go (default: benchmarks/results)")


@contextlib.contextmanager
def reexported(model_dir: str, profile: config_lib.PipelineConfig,
               changes: Mapping[str, Any]) -> Iterator[Tuple[str, Optional[str]]]:
  """Yields (SavedModel to measure, how the result names it, or None to keep the measured path).

  With `changes` (SamplerConfig fields), the model's weights are re-exported to a scratch folder
  as serving.reexport does it: every other setting the model records is kept. `profile` supplies
  the noise schedule the network was trained with.
  """
  if not changes:
    yield model_dir, None
    return
  with tempfile.TemporaryDirectory() as scratch:
    export_dir, _ = reexport.reexport(resolve_model_dir(model_dir), scratch, profile,
                                      dict(changes), version=1)
    fields = ", ".join(f"{key}={value}" for key, value in changes.items())
    yield export_dir, f"{model_dir} (re-exported with {fields})"


def provenance(tool: str, argv: Sequence[str]) -> Dict[str, Any]:
  """The fields every result starts with: the command that reproduces it and the machine."""
  return {"command": shlex.join(["python", "-m", f"benchmarks.{tool}", *argv]),
          "machine": machine.describe()}


def write_json(result: Mapping[str, Any], results_dir: str, file_name: str) -> str:
  """Writes `result` as indented JSON to <results_dir>/<file_name>; returns the path."""
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, file_name)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  return path
