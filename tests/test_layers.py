"""The packages are layered: each imports only from packages below it, never across or up.

  core                       config, environment, serving contract: imports nothing of the project
  trainer_module, components the model library and the custom TFX components
  pipeline, serving          the pipeline definition and runners; the TF Serving client and tools
  benchmarks                 measurement tools
"""

import ast
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER = {"core": 0, "trainer_module": 1, "components": 1, "pipeline": 2, "serving": 2,
         "benchmarks": 3}


def _project_imports(path):
  """The top-level project packages a module imports (at any depth of its code)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module]
    else:
      continue
    for name in names:
      if name.split(".")[0] in LAYER:
        yield node.lineno, name.split(".")[0]


def _modules():
  for package in LAYER:
    for directory, _, files in os.walk(os.path.join(REPO_ROOT, package)):
      for name in sorted(files):
        if name.endswith(".py"):
          yield package, os.path.relpath(os.path.join(directory, name), REPO_ROOT)


@pytest.mark.parametrize("package, module", list(_modules()))
def test_a_module_imports_only_its_own_package_and_those_below(package, module):
  for line, imported in _project_imports(os.path.join(REPO_ROOT, module)):
    assert imported == package or LAYER[imported] < LAYER[package], (
        f"{module}:{line} imports {imported}, which is not below {package}")


def test_the_ground_imports_nothing_of_the_project():
  for package, module in _modules():
    if package == "core":
      assert {name for _, name in _project_imports(os.path.join(REPO_ROOT, module))} <= {"core"}
