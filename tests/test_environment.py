"""core.environment: what every entry point sets before TensorFlow and Google Cloud load."""

import os
import subprocess
import sys

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the variables and filters of core.environment act on, unset so the child starts without them.
_UNSET = ("TF_USE_LEGACY_KERAS", "TF_ENABLE_ONEDNN_OPTS", "PYTHONWARNINGS")
_PYTHON_VERSION_NOTICE = "which Google will stop supporting"


def _run(code: str) -> subprocess.CompletedProcess:
  """`code` in a new interpreter at the repository root."""
  env = {k: v for k, v in os.environ.items() if k not in _UNSET}
  return subprocess.run([sys.executable, "-c", code], cwd=_REPO, env=env, capture_output=True,
                        text=True, check=True)


def test_google_clouds_python_version_notice_is_filtered():
  if _PYTHON_VERSION_NOTICE not in _run("import google.api_core").stderr:
    pytest.skip("google-api-core gives no Python version notice on this date")
  assert _PYTHON_VERSION_NOTICE not in _run("import pipeline; import google.api_core").stderr


def test_tensorflow_will_see_tf_keras_and_onednn():
  printed = _run("import os, pipeline; "
                 "print(os.environ['TF_USE_LEGACY_KERAS'], os.environ['TF_ENABLE_ONEDNN_OPTS'])")
  assert printed.stdout.split() == ["1", "1"]
