"""Airflow and Kubeflow: the pipeline compiles to a Kubeflow spec and loads and runs as an
Airflow DAG, with the components and dependencies of create_pipeline.

Airflow and kfp live in their own environment, .venv-orchestrators
(scripts/install_orchestrators.sh), so these tests run their checks there, in a subprocess that
prints JSON; without that environment they are skipped. The lock test and the Kubeflow check's
test need only the main environment.
"""

import json
import os
import re
import shutil
import subprocess
import types

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORCHESTRATOR_PYTHON = os.path.join(REPO_ROOT, ".venv-orchestrators", "bin", "python")
ORCHESTRATOR_BIN = os.path.dirname(ORCHESTRATOR_PYTHON)
DAG_FILE = os.path.join(REPO_ROOT, "pipeline", "airflow_dag.py")
DAG_ID = "mnist-diffusion"

needs_orchestrators = pytest.mark.skipif(
    not os.path.exists(ORCHESTRATOR_PYTHON),
    reason=".venv-orchestrators is not installed (bash scripts/install_orchestrators.sh)")

# {node id: sorted upstream node ids} of create_pipeline for the smoke profile (the paths, which
# the MNIST_DIFFUSION_* variables give, change no edge).
_GRAPH = """
import json, os, sys
from core import config as config_lib
from pipeline import definition
config = config_lib.profile("smoke", pipeline_root=os.environ["MNIST_DIFFUSION_PIPELINE_ROOT"],
                            serving_dir=os.environ["MNIST_DIFFUSION_SERVING_DIR"])
def graph_of(pipeline):
  return {node.id: sorted(up.id for up in node.upstream_nodes) for node in pipeline.components}
graph = graph_of(definition.create_pipeline(config))
"""

_KUBEFLOW = _GRAPH + """
from pipeline import kubeflow
code = kubeflow.main(["--profile", "smoke", "--output", sys.argv[1],
                      "--pipeline-root", config.pipeline_root, "--serving-dir", config.serving_dir])
# What Kubeflow compiles: the pipeline with TFX's built-in resolvers only.
graph = graph_of(definition.create_pipeline(config, standard_resolvers_only=True))
print("RESULT " + json.dumps({"code": code, "graph": graph}))
"""

_DAGBAG = _GRAPH + """
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
dags = {dag_id: {"schedule": dag.schedule_interval, "catchup": dag.catchup,
                 "max_active_runs": dag.max_active_runs,
                 "tasks": {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks}}
        for dag_id, dag in bag.dags.items()}
# The last line of each traceback: the exception.
errors = {path: str(error).strip().splitlines()[-1] for path, error in bag.import_errors.items()}
print("RESULT " + json.dumps({"import_errors": errors,
                              "dags": dags, "graph": graph}))
"""


def _dags_folder(tmp_path):
  """A dags folder holding a copy of the DAG file, as a user installs it."""
  folder = tmp_path / "dags"
  folder.mkdir(exist_ok=True)
  shutil.copy(DAG_FILE, folder)
  return folder


def _environment(tmp_path):
  """Variables for a subprocess in .venv-orchestrators: a throw-away Airflow home and the smoke
  profile writing under tmp_path."""
  env = dict(os.environ)
  env.pop("VIRTUAL_ENV", None)
  env.update({
      "PATH": ORCHESTRATOR_BIN + os.pathsep + env.get("PATH", ""),
      "PYTHONPATH": REPO_ROOT,
      "TF_CPP_MIN_LOG_LEVEL": "3",
      "AIRFLOW_HOME": str(tmp_path / "airflow"),
      "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
      "AIRFLOW__CORE__DAGS_FOLDER": str(_dags_folder(tmp_path)),
      # Parsing the DAG imports TFX and TensorFlow: tens of seconds, over Airflow's 30 s default.
      "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
      "MNIST_DIFFUSION_PROFILE": "smoke",
      "MNIST_DIFFUSION_PIPELINE_ROOT": str(tmp_path / "pipeline_root"),
      "MNIST_DIFFUSION_SERVING_DIR": str(tmp_path / "serving_model"),
  })
  return env


def _run(command, tmp_path, timeout):
  result = subprocess.run(command, cwd=tmp_path, env=_environment(tmp_path), capture_output=True,
                          text=True, timeout=timeout)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result


def _result(command, tmp_path, timeout=900):
  """The JSON after RESULT on the command's output, with its stderr's tail under "stderr"."""
  completed = _run(command, tmp_path, timeout)
  lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
  assert lines, completed.stdout[-2000:] + completed.stderr[-3000:]
  return dict(json.loads(lines[-1][len("RESULT "):]), stderr=completed.stderr[-2000:])


def _pins(path):
  with open(path) as f:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", f.read(), flags=re.MULTILINE))


def test_orchestrator_lock_keeps_every_version_of_the_main_lock_but_the_relaxed_ones():
  with open(os.path.join(REPO_ROOT, "scripts", "install_orchestrators.sh")) as f:
    relaxed = set(re.search(r"^RELAXED=\((.*)\)$", f.read(), flags=re.MULTILINE).group(1).split())
  main = _pins(os.path.join(REPO_ROOT, "requirements.lock"))
  orchestrators = _pins(os.path.join(REPO_ROOT, "requirements-orchestrators.lock"))
  assert not set(main) - set(orchestrators)
  changed = {name for name in main if main[name] != orchestrators[name]}
  assert changed <= relaxed
  assert {"apache-airflow", "kfp"} <= set(orchestrators)


@pytest.mark.slow
def test_kubeflow_check_names_each_node_the_compiler_cannot_take():
  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx
  from tfx.dsl.input_resolution import canned_resolver_functions
  from pipeline import kubeflow

  class CustomStrategy(tfx.dsl.experimental.LatestArtifactStrategy):
    pass

  examples = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                             producer_component_id="gen", output_key="examples")
  latest = tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
                            examples=examples).with_id("latest")
  custom = tfx.dsl.Resolver(strategy_class=CustomStrategy, examples=examples).with_id("custom")
  plain = tfx.components.StatisticsGen(examples=latest.outputs["examples"]).with_id("plain")
  window = tfx.components.StatisticsGen(
      examples=canned_resolver_functions.latest_created(examples, n=2)).with_id("window")

  kubeflow.check_compilable(types.SimpleNamespace(components=[latest, plain]))
  with pytest.raises(ValueError) as error:
    kubeflow.check_compilable(types.SimpleNamespace(components=[latest, custom, plain, window]))
  message = str(error.value)
  assert "Resolver custom uses" in message and "CustomStrategy" in message
  assert "window.inputs['examples'] is a ResolvedChannel" in message
  assert "Resolver latest " not in message and "plain.inputs" not in message


@needs_orchestrators
@pytest.mark.slow
def test_kubeflow_spec_has_every_component_and_its_dependencies(tmp_path):
  spec_path = tmp_path / "pipeline.json"
  result = _result([ORCHESTRATOR_PYTHON, "-c", _KUBEFLOW, str(spec_path)], tmp_path)
  assert result["code"] == 0, result["stderr"]
  with open(spec_path) as f:
    tasks = json.load(f)["pipelineSpec"]["root"]["dag"]["tasks"]
  graph = result["graph"]

  # TFX compiles a LatestBlessedModelStrategy Resolver <id> into two tasks,
  # <id>-model-resolver and <id>-model-blessing-resolver; every other node is one task <id>.
  def node_of(task):
    for suffix in ("-model-blessing-resolver", "-model-resolver"):
      if task.endswith(suffix) and task[:-len(suffix)] in graph:
        return task[:-len(suffix)]
    return task

  upstream = {}
  for name, task in tasks.items():
    node = node_of(name)
    upstream.setdefault(node, set()).update(
        node_of(dependency) for dependency in task.get("dependentTasks", []))
  assert {node: sorted(deps - {node}) for node, deps in upstream.items()} == graph


@needs_orchestrators
@pytest.mark.slow
def test_airflow_dag_loads_with_one_task_per_component_and_the_pipeline_dependencies(tmp_path):
  result = _result([ORCHESTRATOR_PYTHON, "-c", _DAGBAG, str(_dags_folder(tmp_path))], tmp_path)
  assert result["import_errors"] == {}
  assert list(result["dags"]) == [DAG_ID]
  dag = result["dags"][DAG_ID]
  assert (dag["schedule"], dag["catchup"], dag["max_active_runs"]) == ("@daily", False, 1)
  assert dag["tasks"] == result["graph"]


@needs_orchestrators
@pytest.mark.slow
def test_airflow_dags_test_runs_the_smoke_pipeline_and_pushes_a_model(tmp_path):
  airflow = os.path.join(ORCHESTRATOR_BIN, "airflow")
  _run([airflow, "db", "migrate"], tmp_path, timeout=300)
  _run([airflow, "dags", "test", DAG_ID], tmp_path, timeout=1200)
  serving_dir = tmp_path / "serving_model"
  versions = [v for v in os.listdir(serving_dir) if v.isdigit()]
  assert len(versions) == 1
  assert (serving_dir / versions[0] / "saved_model.pb").exists()

