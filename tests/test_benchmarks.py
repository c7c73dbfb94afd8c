"""The maintained benchmark tools (benchmarks/), run end to end in a tiny configuration.

The smoke-profile sampler is exported once per test run (tests/conftest.py). Its weights are
seeded: a fresh U-Net's zero-initialised output conv predicts zero everywhere, and then labels and
guidance would not reach the images, so the Python-loop-vs-exported comparison would pin much less.
The tests that make their own exports, train or start a fresh process are marked slow; the rest
use fakes or that one shared export.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import common
from benchmarks import machine
from benchmarks import quality
from benchmarks import serving_concurrency
from benchmarks import serving_latency
from benchmarks import train_throughput
from benchmarks import warm_start
from core import config as config_lib
from core import serving_contract
from core.config import NULL_LABEL
from tests.support import fake_models
from tests.support import tiny_models
from trainer_module import export
from trainer_module import flops

_CONFIG = config_lib.profile("smoke")


def _seeded_unet(seed: int = 0):
  return tiny_models.seeded_tiny_unet(seed=seed, config=_CONFIG.unet)


@pytest.fixture(scope="module")
def exported_dir(smoke_export_dir):
  return smoke_export_dir


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
  """Fake examples, judge and sampler (TFX Model artifact layout): quality's inputs in seconds."""
  root = tmp_path_factory.mktemp("fakes")
  fake_models.write_fake_examples(str(root / "examples"), num_train=40, num_eval=20)
  return {"examples": str(root / "examples"),
          "classifier": fake_models.save_fake_classifier(str(root / "classifier")),
          "diffusion": fake_models.save_fake_diffusion_model(str(root / "diffusion"))}


def _touch_saved_model(path):
  """A folder that serving_contract.is_saved_model_dir takes for a SavedModel."""
  os.makedirs(path)
  open(os.path.join(path, "saved_model.pb"), "wb").close()
  return str(path)


def test_resolve_model_dir_takes_a_saved_model_an_artifact_or_a_serving_dir(tmp_path):
  saved_model = _touch_saved_model(tmp_path / "model")
  assert common.resolve_model_dir(saved_model) == saved_model
  artifact = tmp_path / "artifact"
  inside = _touch_saved_model(artifact / common.MODEL_ARTIFACT_SUBDIR)
  assert common.resolve_model_dir(str(artifact)) == inside
  serving = tmp_path / "serving"
  _touch_saved_model(serving / "3")
  latest = _touch_saved_model(serving / "12")
  os.makedirs(serving / "20")  # a version still being written: no SavedModel yet
  assert common.resolve_model_dir(str(serving)) == latest
  with pytest.raises(FileNotFoundError):
    common.resolve_model_dir(str(tmp_path / "missing"))


def test_a_result_carries_its_command_and_machine_and_is_written_as_json(tmp_path):
  result = {**common.provenance("quality", ["--model-dir", "a b", "--steps", "2"]), "value": 1.5}
  assert result["command"] == "python -m benchmarks.quality --model-dir 'a b' --steps 2"
  assert set(result["machine"]) >= {"cpus", "tensorflow", "platform", "onednn"}
  path = common.write_json(result, str(tmp_path / "new"), "tool.json")
  assert path == str(tmp_path / "new" / "tool.json")
  with open(path) as f:
    assert json.load(f) == result


def test_reexported_without_changes_measures_the_model_as_given(tmp_path):
  with common.reexported(str(tmp_path), _CONFIG, {}) as (model_dir, named):
    assert (model_dir, named) == (str(tmp_path), None)


@pytest.mark.parametrize("tool", [quality, serving_latency, serving_concurrency, train_throughput,
                                  warm_start])
def test_every_tool_takes_the_common_results_dir_flag(tool, capsys):
  with pytest.raises(SystemExit) as exit_info:
    tool.main(["--help"])
  assert exit_info.value.code == 0
  assert "--results-dir" in capsys.readouterr().out


@pytest.mark.slow
def test_python_loop_sampler_matches_exported_sampler(exported_dir):
  loaded = tf.saved_model.load(exported_dir)
  model, _ = export.load_unet(loaded)
  sampler = serving_latency.PythonLoopSampler(model, _CONFIG.diffusion, _CONFIG.sampler)
  labels = np.array([0, 3, 7, 10], np.int32)
  for guidance_scale, num_steps in ((1.5, 3), (0.0, 2)):
    expected = loaded.signatures["serving_default"](
        labels=tf.constant(labels), guidance_scale=tf.constant(guidance_scale),
        num_steps=tf.constant(num_steps), seed=tf.constant(5))["images_float"].numpy()
    images = sampler.generate(labels, num_steps, guidance_scale, seed=5)
    assert images.shape == expected.shape == (4, 28, 28, 1)
    np.testing.assert_allclose(images, expected, atol=1e-4)
    assert np.abs(images[0] - images[1]).max() > 0.1  # the comparison is not between constants


@pytest.mark.slow
def test_python_loop_sampler_follows_the_exported_sampler_and_interval(tmp_path):
  dpm_dir = str(tmp_path / "dpmpp_2m")
  export.export_sampler(_seeded_unet(), _CONFIG.diffusion,
                        dataclasses.replace(_CONFIG.sampler, sampler="dpmpp_2m",
                                            guidance_min_sigma=0.5, guidance_max_sigma=20.0),
                        dpm_dir, _CONFIG.unet)
  loaded = tf.saved_model.load(dpm_dir)
  sampler_config = serving_contract.recorded_sampler_config(loaded)
  assert (sampler_config.sampler, sampler_config.guidance_min_sigma,
          sampler_config.guidance_max_sigma) == ("dpmpp_2m", 0.5, 20.0)
  model, _ = export.load_unet(loaded)
  sampler = serving_latency.PythonLoopSampler(model, _CONFIG.diffusion, sampler_config)
  labels = np.array([1, 4, 9], np.int32)
  expected = loaded.signatures["serving_default"](
      labels=tf.constant(labels), guidance_scale=tf.constant(2.0),
      num_steps=tf.constant(4), seed=tf.constant(2))["images_float"].numpy()
  np.testing.assert_allclose(sampler.generate(labels, 4, 2.0, seed=2), expected, atol=1e-4)
  ddim = serving_latency.PythonLoopSampler(
      sampler.model, _CONFIG.diffusion, dataclasses.replace(sampler_config, sampler="ddim"))
  assert np.abs(ddim.generate(labels, 4, 2.0, seed=2) - expected).max() > 1e-3  # not DDIM's math


def test_python_loop_sampler_rejects_the_stochastic_sampler():
  with pytest.raises(ValueError, match="ancestral"):
    serving_latency.PythonLoopSampler(
        _seeded_unet(), _CONFIG.diffusion, dataclasses.replace(_CONFIG.sampler, sampler="ancestral"))


@pytest.mark.slow
def test_serving_latency_writes_result(exported_dir, tmp_path, monkeypatch, capsys):
  # Measuring the matmul rate takes seconds and is flops.py's business, not this test's.
  monkeypatch.setattr(flops, "matmul_flops_per_second", lambda: 1e10)
  serving_dir = tmp_path / "serving"  # the Pusher's layout: numeric versions
  shutil.copytree(exported_dir, serving_dir / "3")
  shutil.copytree(exported_dir, serving_dir / "7")
  serving_latency.main(["--model-dir", str(serving_dir), "--profile", "smoke", "--batch-sizes",
                        "1", "2", "--steps", "2", "--repeats", "2", "--results-dir", str(tmp_path)])
  with open(tmp_path / serving_latency.RESULT_FILE_NAME) as f:
    result = json.load(f)
  assert result["command"].startswith("python -m benchmarks.serving_latency --model-dir ")
  assert set(result["machine"]) >= {"cpus", "tensorflow", "platform", "onednn"}
  # core/environment.py asks for oneDNN, and the fresh process inherits the environment.
  assert result["fresh_process"]["onednn"] is True
  assert result["model_dir"].endswith("/7")  # a serving dir resolves to its highest version
  assert result["guidance_scale"] == _CONFIG.sampler.guidance_scale  # the one the model records
  assert result["fresh_process"]["project_modules"] == []
  assert result["fresh_process"]["load_seconds"] > 0
  assert [(r["batch_size"], r["num_steps"]) for r in result["rows"]] == [(1, 2), (2, 2)]
  for row in result["rows"]:
    for side in ("in_graph", "python_loop"):
      timing = row[side]
      assert len(timing["seconds"]) == 2
      assert 0 < timing["p50_s"] <= timing["p95_s"]
      assert timing["images_per_second"] == pytest.approx(row["batch_size"] / timing["p50_s"])
    assert row["speedup_p50"] == pytest.approx(
        row["python_loop"]["p50_s"] / row["in_graph"]["p50_s"])
    assert row["pair_speedups"] == pytest.approx(
        [loop / graph for graph, loop in zip(row["in_graph"]["seconds"],
                                             row["python_loop"]["seconds"])])
    assert 0 <= row["cpu_steal_share"] <= 1
    assert len(row["pair_cpu_steal_shares"]) == 2
    assert row["in_graph_share_of_matmul_rate"] == pytest.approx(
        row["in_graph_gflops"] * 1e9 / 1e10)
    # Guided (the model's default scale) over 2 steps at sigma 50 and 1.01: only the second lies in
    # the default guidance interval [1, 5], so one doubled step and one single: three rows a sample.
    assert row["network_rows_per_sample"] == 3
  assert result["targets"]["p50_10_digits_20_steps_under_1s"]["met"] is None  # not in the grid
  assert isinstance(result["targets"]["in_graph_speedup_at_least_2x"]["met"], bool)
  assert "| batch | steps |" in capsys.readouterr().out


def test_time_interleaved_alternates_the_two_samplers():
  calls = []

  class FakeFresh:
    def call(self, batch_size, num_steps, seed):
      calls.append(("in_graph", seed))
      return 0.5

  class FakeLoop:
    def sample(self, noise, labels, num_steps, guidance_scale):
      seed = next(s for s in range(4) if np.array_equal(
          noise, serving_latency.samplers.initial_noise(tf.constant(s), len(labels))))
      calls.append(("python_loop", seed))
      assert (num_steps, guidance_scale, list(labels)) == (3, 1.5, [0, 1])

  runs = serving_latency.time_interleaved(FakeFresh(), FakeLoop(), [(2, 3)], repeats=3,
                                          guidance_scale=1.5)
  # An untimed warm-up of each, then repeat r of both sides back to back with seed r, the side
  # that goes first alternating.
  assert calls == [("in_graph", 0), ("python_loop", 0), ("in_graph", 1), ("python_loop", 1),
                   ("python_loop", 2), ("in_graph", 2), ("in_graph", 3), ("python_loop", 3)]
  assert len(runs) == 1 and runs[0]["in_graph_seconds"] == [0.5] * 3
  assert len(runs[0]["python_loop_seconds"]) == 3


def test_cpu_ticks_reads_steal_and_total_from_proc_stat(tmp_path):
  stat = tmp_path / "stat"
  # user nice system idle iowait irq softirq steal guest guest_nice
  stat.write_text("cpu  100 5 20 800 10 0 5 60 30 0\ncpu0 50 2 10 400 5 0 2 30 15 0\n")
  assert machine.cpu_ticks(str(stat)) == (60, 1000)  # guest time is already in user
  stat.write_text("intr 1 2 3\n")
  assert machine.cpu_ticks(str(stat)) is None
  assert machine.cpu_ticks(str(tmp_path / "missing")) is None


def test_steal_share_takes_intervals_together():
  assert machine.steal_share([((10, 1000), (30, 1200)), ((50, 2000), (50, 2200))]) == 0.05
  assert machine.steal_share([((10, 1000), (10, 1000))]) is None  # no time passed
  assert machine.steal_share([((10, 1000), None)]) is None


def test_time_interleaved_records_cpu_steal_per_pair_and_cell(monkeypatch):
  # (before, after) of each timed call; 10 of the second pair's first 100 jiffies were stolen.
  readings = iter([(0, 0), (0, 100), (0, 100), (0, 200),
                   (0, 200), (10, 300), (10, 300), (10, 400)])
  monkeypatch.setattr(machine, "cpu_ticks", lambda: next(readings))

  class Fake:
    def call(self, batch_size, num_steps, seed):
      return 0.5

    def sample(self, noise, labels, num_steps, guidance_scale):
      pass

  [run] = serving_latency.time_interleaved(Fake(), Fake(), [(1, 1)], repeats=2, guidance_scale=1.0)
  assert run["pair_steal_shares"] == [0.0, 0.05]
  assert run["steal_share"] == 0.025


@pytest.mark.slow
def test_fresh_process_sampler_reports_a_model_it_cannot_load(tmp_path):
  with pytest.raises(RuntimeError, match="fresh process failed"):
    serving_latency.FreshProcessSampler(str(tmp_path / "no_model"), guidance_scale=1.0)


@pytest.mark.slow
def test_serving_latency_reexports_with_another_chunk_limit(exported_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(flops, "matmul_flops_per_second", lambda: 1e10)
  serving_latency.main(["--model-dir", exported_dir, "--profile", "smoke", "--batch-sizes", "2",
                        "--steps", "1", "--repeats", "1", "--max-rows-per-call", "none",
                        "--results-dir", str(tmp_path)])
  with open(tmp_path / serving_latency.RESULT_FILE_NAME) as f:
    result = json.load(f)
  assert result["model_dir"] == f"{exported_dir} (re-exported with max_rows_per_call=None)"
  assert [(r["batch_size"], r["num_steps"]) for r in result["rows"]] == [(2, 1)]
  for bad in ("0", "-3", "many"):
    with pytest.raises(SystemExit):
      serving_latency.main(["--model-dir", exported_dir, "--max-rows-per-call", bad])


def test_quality_writes_results(fakes, tmp_path):
  quality.main(["--model-dir", fakes["diffusion"], "--classifier-dir", fakes["classifier"],
                "--examples-dir", fakes["examples"], "--profile", "smoke",
                "--samples-per-class", "2", "--steps", "2", "--guidance", "0", "1.5",
                "--results-dir", str(tmp_path)])
  with open(tmp_path / "quality_ddim.json") as f:
    result = json.load(f)
  assert result["name"] == result["sampler"] == "ddim"
  assert result["command"].startswith("python -m benchmarks.quality --model-dir ")
  assert result["model_dir"] == os.path.join(fakes["diffusion"], "Format-Serving")
  assert result["classifier_dir"] == os.path.join(fakes["classifier"], "Format-Serving")
  assert result["data"]["num_eval_images"] == 20
  assert result["denoising"]["sigma"] == 0.4 and result["denoising"]["num_images"] == 20
  assert [p["sigma"] for p in result["denoising_curve"]] == list(_CONFIG.eval.denoise_curve_sigmas)
  assert set(result["real_floor"]) == {"num_images", "frechet", "kid", "judge_accuracy"}
  assert result["real_floor"]["judge_accuracy"]["num_samples"] == 20  # the floor's eval images
  assert [(c["num_steps"], c["guidance_scale"]) for c in result["combinations"]] == [
      (2, 0.0), (2, 1.5)]
  for combo in result["combinations"]:
    assert combo["sampling"]["num_samples"] == 20
    assert 0.0 <= combo["class_agreement"]["overall"] <= 1.0
    assert set(combo["frechet"]) >= {"distance", "real_floor", "ratio", "kid"}
    assert combo["wall_s"] > 0 and set(combo["timings_s"]) == {"sampling", "judging"}
    assert os.path.getsize(tmp_path / combo["grid_png"]) > 0
    assert "judge_accuracy_on_eval" not in combo  # once, in real_floor
  with open(tmp_path / "quality_ddim.md") as f:
    markdown = f.read()
  assert "| steps | guidance | class agreement |" in markdown
  assert "The judge labels" in markdown and "% of those eval images as their true digit" in markdown
  assert "quality_ddim/steps2_guidance1.5.png" in markdown


@pytest.mark.slow
def test_quality_reexports_with_another_sampler_interval_and_dtype_and_runs_only_the_chosen_combos(
    exported_dir, fakes, tmp_path):
  quality.main(["--model-dir", exported_dir, "--classifier-dir", fakes["classifier"],
                "--examples-dir", fakes["examples"], "--profile", "smoke",
                "--samples-per-class", "1", "--combos", "3:1.5", "2:0",
                "--sampler", "dpmpp_2m", "--guidance-interval", "1", "inf",
                "--compute-dtype", "bfloat16", "--results-dir", str(tmp_path)])
  with open(tmp_path / "quality_dpmpp_2m.json") as f:
    result = json.load(f)
  assert result["sampler"] == "dpmpp_2m" and result["guidance_sigma_interval"] == [1.0, None]
  assert result["model_dir"] == (f"{exported_dir} (re-exported with sampler=dpmpp_2m, "
                                 "compute_dtype=bfloat16, guidance_min_sigma=1.0, "
                                 "guidance_max_sigma=None)")
  assert [(c["num_steps"], c["guidance_scale"]) for c in result["combinations"]] == [
      (3, 1.5), (2, 0.0)]


@pytest.mark.slow
def test_a_benchmark_reexport_keeps_the_settings_the_model_records(exported_dir):
  # A bfloat16 DPM-Solver++ model re-exported for another chunk limit stays bfloat16 DPM-Solver++,
  # and records the new limit; the source is left as it was.
  changes = {"sampler": "dpmpp_2m", "compute_dtype": "bfloat16"}
  with common.reexported(os.path.dirname(exported_dir), _CONFIG, changes) as (first, named):
    assert named == (f"{os.path.dirname(exported_dir)} (re-exported with sampler=dpmpp_2m, "
                     "compute_dtype=bfloat16)")
    with common.reexported(first, _CONFIG, {"max_rows_per_call": None}) as (second, _):
      recorded = serving_contract.recorded_sampler_config(tf.saved_model.load(second))
  assert not os.path.exists(first) and not os.path.exists(second)  # scratch, removed
  assert (recorded.sampler, recorded.compute_dtype, recorded.max_rows_per_call) == (
      "dpmpp_2m", "bfloat16", None)
  assert recorded.num_steps == _CONFIG.sampler.num_steps
  assert serving_contract.recorded_sampler_config(
      tf.saved_model.load(exported_dir)).sampler == _CONFIG.sampler.sampler


@pytest.mark.parametrize("text", ["20", "a:1", "20:x", "1:2:3"])
def test_quality_rejects_malformed_combos(text):
  with pytest.raises(SystemExit):
    quality.main(["--model-dir", "m", "--classifier-dir", "c", "--examples-dir", "e",
                  "--combos", text])


@pytest.mark.slow
def test_train_throughput_writes_images_per_second_and_machine_share(tmp_path, monkeypatch):
  monkeypatch.setattr(flops, "matmul_flops_per_second", lambda: 1e10)
  train_throughput.main(["--profile", "smoke", "--steps", "2", "--results-dir", str(tmp_path)])
  with open(tmp_path / "train_throughput_smoke.json") as f:
    result = json.load(f)
  assert result["command"] == ("python -m benchmarks.train_throughput --profile smoke --steps 2 "
                               f"--results-dir {tmp_path}")
  assert result["machine"]["onednn"] is True  # core/environment.py turned it on
  assert result["images_per_second"] > 0 and result["train_gflop_per_image"] > 0
  assert result["share_of_matmul_rate"] == pytest.approx(result["achieved_gflops"] / 10)


def test_serving_concurrency_requests_follow_the_signatures():
  probes = serving_concurrency.probe_requests(max_batch=4)
  assert [probe["labels"].numpy().tolist() for probe in probes] == [[0], [0, 1, 2, 3],
                                                                   [0, 1, 2, 3]]
  rng = np.random.default_rng(0)
  for _ in range(20):
    name, inputs = serving_concurrency.random_request(rng, max_batch=4, max_steps=3)
    assert name == serving_contract.SERVING_SIGNATURE
    assert set(inputs) == {serving_contract.LABELS, serving_contract.GUIDANCE_SCALE,
                           serving_contract.NUM_STEPS, serving_contract.SEED}
    labels = inputs[serving_contract.LABELS].numpy()
    assert labels.dtype == np.int32 and 1 <= len(labels) <= 4
    assert 0 <= labels.min() and labels.max() <= NULL_LABEL
    assert 1 <= int(inputs[serving_contract.NUM_STEPS]) <= 3
    assert 0.0 <= float(inputs[serving_contract.GUIDANCE_SCALE]) <= serving_concurrency.MAX_GUIDANCE
    name, inputs = serving_concurrency.denoise_request(rng, max_batch=4)
    assert name == serving_contract.DENOISE_SIGNATURE
    noisy = inputs[serving_contract.NOISY_IMAGES].numpy()
    assert noisy.shape[1:] == (28, 28, 1) and 0.0 <= noisy.min() and noisy.max() <= 1.0


@pytest.mark.slow
def test_serving_concurrency_answers_every_call_and_records_the_probes(exported_dir, tmp_path,
                                                                       capsys):
  result = serving_concurrency.main([
      "--model-dir", exported_dir, "--threads", "2", "--seconds", "3", "--max-steps", "2",
      "--denoise-every", "2", "--probe-every", "3", "--results-dir", str(tmp_path)])
  assert result["errors"] == []
  assert all(count > 0 for count in result["calls"].values())
  assert result["probe_calls"] == result["calls"]["probe"] == len(result["probe_differences"])
  with open(tmp_path / serving_concurrency.RESULT_FILE_NAME) as f:
    assert json.load(f)["calls"] == result["calls"]
  assert "0 failed" in capsys.readouterr().out
