"""Unit tests of core/config.py: profiles, JSON round trips and strict key checking."""

import dataclasses
import json

import pytest

from core import config as config_lib
from core.config import (ClassifierConfig, DataConfig, DiffusionConfig,
                             EvalConfig, PipelineConfig, SamplerConfig, TrainConfig,
                             UNetConfig)

_SECTIONS = (DataConfig, UNetConfig, DiffusionConfig, TrainConfig, ClassifierConfig,
             SamplerConfig, EvalConfig)


@pytest.mark.parametrize("name", sorted(config_lib.PROFILES))
def test_profile_round_trips_through_json(name):
  config = config_lib.profile(name)
  restored = PipelineConfig.from_json(config.to_json())
  assert restored == config
  assert restored.profile == name
  # Tuples come back as tuples (JSON has only lists), nested sections as dataclasses.
  assert isinstance(restored.unet.channels, tuple)
  assert isinstance(restored.beam_pipeline_args, tuple)
  assert isinstance(restored.eval.denoise_curve_sigmas, tuple)
  assert isinstance(restored.train, TrainConfig)


@pytest.mark.parametrize("name", sorted(config_lib.PROFILES))
def test_every_section_of_profile_round_trips_on_its_own(name):
  config = config_lib.profile(name)
  for field in dataclasses.fields(config):
    section = getattr(config, field.name)
    if dataclasses.is_dataclass(section):
      assert type(section).from_json(section.to_json()) == section


def test_to_json_is_deterministic_and_sorted():
  config = config_lib.profile("smoke")
  text = config.to_json()
  assert text == config_lib.profile("smoke").to_json()
  assert list(json.loads(text)) == sorted(json.loads(text))


@pytest.mark.parametrize("section", _SECTIONS, ids=lambda cls: cls.__name__)
def test_unknown_section_key_raises_value_error(section):
  data = section().to_dict()
  data["not_a_field"] = 1
  with pytest.raises(ValueError, match="not_a_field"):
    section.from_dict(data)


def test_unknown_top_level_key_raises_value_error():
  data = config_lib.profile("cpu").to_dict()
  data["bogus"] = True
  with pytest.raises(ValueError, match="bogus"):
    PipelineConfig.from_json(json.dumps(data))


def test_unknown_nested_key_raises_value_error():
  data = config_lib.profile("cpu").to_dict()
  data["train"]["bogus_rate"] = 0.5
  with pytest.raises(ValueError, match="bogus_rate"):
    PipelineConfig.from_dict(data)


def test_partial_json_keeps_defaults_for_missing_fields():
  restored = PipelineConfig.from_json(json.dumps({"train": {"train_steps": 7}}))
  assert restored.train == TrainConfig(train_steps=7)
  assert restored.unet == UNetConfig()
  assert restored.profile == PipelineConfig().profile


def test_unknown_profile_raises_value_error():
  with pytest.raises(ValueError, match="nope"):
    config_lib.profile("nope")


def test_default_profile_is_cpu():
  assert config_lib.profile() == config_lib.profile(config_lib.DEFAULT_PROFILE)
  assert config_lib.profile().profile == "cpu"


def test_overrides_replace_top_level_fields_only():
  train = TrainConfig(train_steps=3)
  config = config_lib.profile("smoke", pipeline_root="/tmp/root", train=train, enable_cache=False)
  smoke = config_lib.profile("smoke")
  assert config.pipeline_root == "/tmp/root"
  assert config.train == train
  assert config.enable_cache is False
  assert config.profile == "smoke"
  assert config.unet == smoke.unet
  assert config.eval == smoke.eval


def test_override_of_unknown_field_raises():
  with pytest.raises(TypeError):
    config_lib.profile("smoke", not_a_field=1)


def test_profiles_differ_in_numbers():
  smoke, cpu, full = (config_lib.profile(name) for name in ("smoke", "cpu", "full"))
  assert smoke.train.train_steps < cpu.train.train_steps < full.train.train_steps
  assert smoke.data.max_train_examples is not None
  assert cpu.data.max_train_examples is None


def test_metadata_sqlite_defaults_under_pipeline_root():
  config = config_lib.profile("smoke", pipeline_root="/x/root")
  assert config.metadata_sqlite == "/x/root/metadata.sqlite"
  assert config_lib.profile("smoke", metadata_path="/m.db").metadata_sqlite == "/m.db"


def test_configs_are_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    config_lib.profile("smoke").train.train_steps = 1  # type: ignore[misc]
