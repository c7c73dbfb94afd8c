"""Fixtures shared across test modules. Exporting a sampler costs tens of seconds, so the
smoke-profile export is made once per session; tests copy it before changing anything in it."""

import core  # noqa: F401  (sets TensorFlow's environment before anything loads it)

import os

import pytest

from core import config as config_lib

SMOKE = config_lib.profile("smoke")


@pytest.fixture(scope="session")
def smoke_export_dir(tmp_path_factory):
  """A seeded smoke-profile sampler exported in the Pusher layout: <serving_dir>/1/. Read-only."""
  # pylint: disable=g-import-not-at-top
  from tests.support import tiny_models
  from trainer_module import export
  export_dir = str(tmp_path_factory.mktemp("serving_model") / "1")
  export.export_sampler(tiny_models.seeded_tiny_unet(seed=0, config=SMOKE.unet),
                        SMOKE.diffusion, SMOKE.sampler, export_dir, SMOKE.unet)
  return export_dir


@pytest.fixture(scope="session")
def smoke_serving_dir(smoke_export_dir):
  return os.path.dirname(smoke_export_dir)
