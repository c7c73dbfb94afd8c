"""The serving-latency and quality benchmarks, run end to end in a tiny configuration.

One smoke-profile sampler is exported per module (~20 s). Its weights are seeded first: a fresh
U-Net's zero-initialised output conv predicts zero everywhere, and then labels and guidance would
not reach the images, so the Python-loop-vs-exported comparison would pin much less.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import denoise_clipping
from benchmarks import denoiser_ceiling
from benchmarks import exports_ab
from benchmarks import forward_cost
from benchmarks import judge
from benchmarks import machine
from benchmarks import quality
from benchmarks import serving_concurrency
from benchmarks import serving_latency
from benchmarks import sweep
from benchmarks import train_throughput
from components.diffusion_evaluator import evaluation
from tests.support import fake_models
from core import config as config_lib
from tests.support import tiny_models
from trainer_module import clipped_noise
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
  root = tmp_path_factory.mktemp("fakes")
  fake_models.write_fake_examples(str(root / "examples"), num_train=40, num_eval=20)
  return {"examples": str(root / "examples"),
          "classifier": fake_models.save_fake_classifier(str(root / "classifier"))}


def test_python_loop_sampler_matches_exported_sampler(exported_dir):
  loaded = tf.saved_model.load(exported_dir)
  sampler = serving_latency.PythonLoopSampler(
      export.restore_unet(exported_dir, _CONFIG.unet), _CONFIG.diffusion, _CONFIG.sampler)
  labels = np.array([0, 3, 7, 10], np.int32)
  for guidance_scale, num_steps in ((1.5, 3), (0.0, 2)):
    expected = loaded.signatures["serving_default"](
        labels=tf.constant(labels), guidance_scale=tf.constant(guidance_scale),
        num_steps=tf.constant(num_steps), seed=tf.constant(5))["images_float"].numpy()
    images = sampler.generate(labels, num_steps, guidance_scale, seed=5)
    assert images.shape == expected.shape == (4, 28, 28, 1)
    np.testing.assert_allclose(images, expected, atol=1e-4)
    assert np.abs(images[0] - images[1]).max() > 0.1  # the comparison is not between constants


def test_python_loop_sampler_follows_the_exported_sampler_and_interval(tmp_path):
  dpm_dir = str(tmp_path / "dpmpp_2m")
  export.export_sampler(_seeded_unet(), _CONFIG.diffusion,
                        dataclasses.replace(_CONFIG.sampler, sampler="dpmpp_2m",
                                            guidance_min_sigma=0.5, guidance_max_sigma=20.0),
                        dpm_dir)
  sampler_config = export.exported_sampler_config(tf.saved_model.load(dpm_dir), _CONFIG.sampler)
  assert (sampler_config.sampler, sampler_config.guidance_min_sigma,
          sampler_config.guidance_max_sigma) == ("dpmpp_2m", 0.5, 20.0)
  sampler = serving_latency.PythonLoopSampler(
      export.restore_unet(dpm_dir, _CONFIG.unet), _CONFIG.diffusion, sampler_config)
  labels = np.array([1, 4, 9], np.int32)
  expected = tf.saved_model.load(dpm_dir).signatures["serving_default"](
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


def test_restore_unet_rejects_another_profiles_network(exported_dir):
  with pytest.raises(ValueError, match="--profile"):
    export.restore_unet(exported_dir, config_lib.profile("cpu").unet)


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
    # Guided (scale 1.5) over 2 steps at sigma 50 and 1.01: only the second lies in the default
    # guidance interval [1, 5], so one doubled step and one single: three rows per sample.
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


def test_exports_ab_calls_the_two_exports_in_turn():
  calls = []

  def fake(name):
    def signature(**inputs):
      calls.append((name, int(inputs["num_steps"])))
      return {"images": tf.zeros([1], tf.uint8)}
    return signature

  timed = exports_ab.time_in_turn([fake("a"), fake("b")], exports_ab.request(2, 3, 1.5), repeats=3)
  assert calls == [("a", 3), ("b", 3), ("b", 3), ("a", 3), ("a", 3), ("b", 3)]
  assert [len(seconds) for seconds in timed["seconds"]] == [3, 3]


def test_exports_ab_compares_two_exports_and_writes_result(exported_dir, tmp_path, capsys):
  # The same export twice, once by its serving dir: the same images, pair ratios around 1.
  exports_ab.main(["--model-dirs", exported_dir, os.path.dirname(exported_dir), "--digits", "2",
                   "--steps", "2", "--repeats", "3", "--results-dir", str(tmp_path)])
  with open(tmp_path / exports_ab.RESULT_FILE_NAME) as f:
    result = json.load(f)
  assert result["model_dirs"] == {"a": exported_dir, "b": exported_dir}
  (row,) = result["rows"]
  assert (row["digits"], row["num_steps"]) == (2, 2)
  assert len(row["pair_ratios_a_over_b"]) == 3 and row["median_pair_ratio_a_over_b"] > 0
  assert row["max_abs_difference_images_float"] == 0.0 and row["differing_uint8_pixels"] == 0
  assert "| 2 | 2 |" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    exports_ab.main(["--model-dirs", exported_dir])


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


def test_fresh_process_sampler_reports_a_model_it_cannot_load(tmp_path):
  with pytest.raises(RuntimeError, match="fresh process failed"):
    serving_latency.FreshProcessSampler(str(tmp_path / "no_model"), guidance_scale=1.0)


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


def test_quality_writes_results(exported_dir, fakes, tmp_path):
  quality.main(["--model-dir", exported_dir, "--classifier-dir", fakes["classifier"],
                "--examples-dir", fakes["examples"], "--profile", "smoke",
                "--samples-per-class", "2", "--steps", "2", "--guidance", "0", "1.5",
                "--results-dir", str(tmp_path)])
  with open(tmp_path / "quality_ddim.json") as f:
    result = json.load(f)
  assert result["name"] == result["sampler"] == "ddim"
  assert result["command"].startswith("python -m benchmarks.quality --model-dir ")
  assert result["classifier_dir"].endswith("Format-Serving")
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


def test_exported_sampler_and_guidance_interval_are_saved_in_the_model(exported_dir, tmp_path):
  default = tf.saved_model.load(exported_dir)
  assert evaluation.exported_sampler(default) == "ddim"
  assert default.guidance_sigma_interval.numpy().tolist() == [
      config_lib.DEFAULT_GUIDANCE_MIN_SIGMA, config_lib.DEFAULT_GUIDANCE_MAX_SIGMA]
  dpm_dir = str(tmp_path / "dpmpp_2m")
  export.export_sampler(_seeded_unet(), _CONFIG.diffusion,
                        dataclasses.replace(_CONFIG.sampler, sampler="dpmpp_2m",
                                            guidance_min_sigma=1.0, guidance_max_sigma=8.0), dpm_dir)
  dpm = tf.saved_model.load(dpm_dir)
  assert evaluation.exported_sampler(dpm) == "dpmpp_2m"
  assert dpm.guidance_sigma_interval.numpy().tolist() == [1.0, 8.0]
  fake_dir = fake_models.save_fake_diffusion_model(str(tmp_path / "fake"))
  assert evaluation.DiffusionModel(os.path.join(fake_dir, "Format-Serving"), 4).sampler == (
      evaluation.SAMPLER_UNKNOWN)


def test_quality_reexports_with_another_sampler_interval_and_dtype_and_runs_only_the_chosen_combos(
    exported_dir, fakes, tmp_path):
  quality.main(["--model-dir", exported_dir, "--classifier-dir", fakes["classifier"],
                "--examples-dir", fakes["examples"], "--profile", "smoke",
                "--samples-per-class", "1", "--combos", "3:1.5", "2:0",
                "--sampler", "dpmpp_2m", "--guidance-interval", "1", "inf",
                "--compute-dtype", "bfloat16", "--results-dir", str(tmp_path)])
  with open(tmp_path / "quality_dpmpp_2m.json") as f:
    result = json.load(f)
  assert result["sampler"] == "dpmpp_2m"
  assert result["model_dir"] == (f"{exported_dir} (re-exported with sampler=dpmpp_2m, "
                                 "compute_dtype=bfloat16, guidance_min_sigma=1.0, "
                                 "guidance_max_sigma=None)")
  assert [(c["num_steps"], c["guidance_scale"]) for c in result["combinations"]] == [
      (3, 1.5), (2, 0.0)]

def test_a_benchmark_reexport_keeps_the_settings_the_model_records(exported_dir, tmp_path):
  # A bfloat16 DPM-Solver++ model re-exported for another chunk limit stays bfloat16 DPM-Solver++,
  # and records the new limit.
  first = quality.reexport_with_sampler(exported_dir, _CONFIG, str(tmp_path / "first"),
                                        sampler="dpmpp_2m", compute_dtype="bfloat16")
  second = quality.reexport_with_sampler(first, _CONFIG, str(tmp_path / "second"),
                                         max_rows_per_call=None)
  recorded = export.exported_sampler_config(tf.saved_model.load(second), _CONFIG.sampler)
  assert (recorded.sampler, recorded.compute_dtype, recorded.max_rows_per_call) == (
      "dpmpp_2m", "bfloat16", None)


@pytest.mark.parametrize("text", ["20", "a:1", "20:x", "1:2:3"])
def test_quality_rejects_malformed_combos(text):
  with pytest.raises(SystemExit):
    quality.main(["--model-dir", "m", "--classifier-dir", "c", "--examples-dir", "e",
                  "--combos", text])


def test_denoise_clipping_scores_every_input_variant(
    exported_dir, fakes, tmp_path, capsys):
  denoise_clipping.main(["--model-dir", exported_dir, "--examples-dir", fakes["examples"],
                         "--profile", "smoke", "--num-images", "6", "--sigmas", "0.4",
                         "--results-dir", str(tmp_path), "--name", "clipping"])
  with open(tmp_path / "clipping.json") as f:
    result = json.load(f)
  assert result["num_images"] == 6 and [row["sigma"] for row in result["rows"]] == [0.4]
  row = result["rows"][0]
  for variant in denoise_clipping.VARIANTS:
    assert row[variant]["num_images"] == 6 and np.isfinite(row[variant]["psnr"])
  assert "| 0.4 |" in capsys.readouterr().out


def test_the_signature_is_the_raw_network_after_unclipping(exported_dir):
  # So the benchmark's clipped_mean row measures what `denoise` serves.
  noisy = tf.clip_by_value(tf.random.stateless_uniform([3, 28, 28, 1], seed=[5, 0], minval=-0.5,
                                                       maxval=1.5), 0.0, 1.0).numpy()
  assert (noisy == 0.0).any() and (noisy == 1.0).any() and ((noisy > 0) & (noisy < 1)).any()
  raw = denoise_clipping.raw_network_denoiser(exported_dir, _CONFIG, 2)(
      clipped_noise.unclip(noisy, 0.4).numpy(), 0.4)
  signature = evaluation.DiffusionModel(exported_dir, 2).denoise(noisy, 0.4)
  np.testing.assert_allclose(raw, signature, atol=1e-5)


def test_the_labelled_variant_conditions_on_the_given_labels(exported_dir):
  denoise = denoise_clipping.raw_network_denoiser(exported_dir, _CONFIG, 2)
  noisy = tf.random.stateless_uniform([3, 28, 28, 1], seed=[6, 0]).numpy()
  unconditional = denoise(noisy, 0.4)
  null_labels = np.full([3], _CONFIG.sampler.null_label, np.int32)
  np.testing.assert_array_equal(denoise(noisy, 0.4, null_labels), unconditional)
  labelled = denoise(noisy, 0.4, np.array([0, 1, 2], np.int32))
  assert labelled.shape == unconditional.shape
  assert not np.allclose(labelled, unconditional)


@pytest.mark.parametrize("name", sorted(sweep.EXPERIMENTS))
def test_every_sweep_experiment_is_the_cpu_profile_with_its_changes(name):
  config = sweep.experiment_config(name, train_steps=7)
  cpu = config_lib.profile("cpu")
  assert config.train.train_steps == 7
  assert config.eval == cpu.eval
  # Every row guides at every step, whatever the served default's interval.
  assert config.sampler == dataclasses.replace(cpu.sampler, guidance_min_sigma=0.0,
                                               guidance_max_sigma=None)
  for section, fields in sweep.EXPERIMENTS[name].items():
    for field, value in fields.items():
      assert getattr(getattr(config, section), field) == value


def test_sweep_dataset_is_scaled_like_the_transform(tmp_path):
  config = dataclasses.replace(
      config_lib.profile("smoke"), train=dataclasses.replace(config_lib.profile("smoke").train,
                                                             batch_size=5, shuffle_buffer=10))
  images, labels = next(iter(sweep.mnist_dataset(config_lib.EMBEDDED_MNIST_DIR, config)))
  assert images.shape == (5, 28, 28, 1) and labels.shape == (5,) and labels.dtype == tf.int32
  assert float(tf.reduce_min(images)) == -1.0 and float(tf.reduce_max(images)) <= 1.0


def test_sweep_skips_finished_experiments_and_tabulates_them(tmp_path):
  finished = {"name": "baseline", "train_steps": 3, "psnr": 21.5,
              "training": {"parameters": 1000, "wall_seconds": 12.0, "images_per_second": 50.0},
              "guidance": {"1": {"agreement": 0.9, "frechet_ratio": 1.5},
                           "1.5": {"agreement": 0.95, "frechet_ratio": 1.2}}}
  work_dir = tmp_path / "baseline_steps3"
  work_dir.mkdir()
  (work_dir / "result.json").write_text(json.dumps(finished))
  # Nothing is trained or scored: judge and real data are never touched.
  result = sweep.run_experiment("baseline", 3, "no-data-dir", str(tmp_path), judge=None, real=None)
  assert result == finished
  table = sweep.markdown_table({"experiments": [result]})
  assert "| baseline | 1,000 | 12 | 50.0 | 21.50 | 90.0% | 95.0% | 1.50 | 1.20 |" in table


def test_judge_trains_and_exports_the_classifier_signature(tmp_path):
  config = dataclasses.replace(config_lib.profile("smoke").classifier, train_steps=2, batch_size=8)
  results = judge.train_judge(config_lib.EMBEDDED_MNIST_DIR, str(tmp_path), config)
  assert 0.0 <= results["eval_accuracy"] <= 1.0
  outputs = tf.saved_model.load(str(tmp_path)).signatures["serving_default"](
      images=tf.zeros([3, 28, 28, 1]))
  assert outputs["probabilities"].shape == (3, 10)
  assert outputs["features"].shape == (3, config.feature_dim)
  assert json.loads((tmp_path / "classifier_eval.json").read_text()) == results


def test_forward_cost_writes_the_cost_of_each_network(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(flops, "matmul_flops_per_second", lambda: 1e10)
  forward_cost.main(["--rows", "2", "--repeats", "1", "--only", "patch2",
                     "--results-dir", str(tmp_path)])
  with open(tmp_path / "forward_cost.json") as f:
    result = json.load(f)
  [patch2] = result["results"]
  assert patch2["unet"]["patch_size"] == 2 and patch2["rows"] == 2
  assert patch2["parameters"] > 0 and patch2["gflop_per_image"] > 0 and patch2["ms_per_call"] > 0
  assert patch2["share_of_matmul_rate"] == pytest.approx(patch2["gflops_achieved"] / 10)
  assert "patch2:" in capsys.readouterr().out


def test_train_throughput_writes_images_per_second_and_machine_share(tmp_path, monkeypatch):
  monkeypatch.setattr(flops, "matmul_flops_per_second", lambda: 1e10)
  train_throughput.main(["--profile", "smoke", "--steps", "2", "--results-dir", str(tmp_path)])
  with open(tmp_path / "train_throughput_smoke.json") as f:
    result = json.load(f)
  assert result["command"] == "python -m benchmarks.train_throughput --profile smoke --steps 2"
  assert result["machine"]["onednn"] is True  # core/environment.py turned it on
  assert result["images_per_second"] > 0 and result["train_gflop_per_image"] > 0
  assert result["share_of_matmul_rate"] == pytest.approx(result["achieved_gflops"] / 10)


def _smoke_denoiser(objective="mse", train_steps=2):
  config = dataclasses.replace(_CONFIG, train=dataclasses.replace(
      _CONFIG.train, train_steps=train_steps, batch_size=4, shuffle_buffer=8, log_every_steps=1))
  return denoiser_ceiling.ProtocolDenoiserTrainer(config, objective)


def test_denoiser_ceiling_feeds_the_network_as_the_served_denoise_signature(exported_dir):
  # Same weights, same clipped input: the benchmark's estimate (clipped to [0, 1] as served)
  # is the pushed model's `denoise` output, so its PSNR is the protocol's.
  trainer = _smoke_denoiser()
  trainer.ema_model.set_weights(export.restore_unet(exported_dir, _CONFIG.unet).get_weights())
  noisy = tf.clip_by_value(tf.random.stateless_uniform([3, 28, 28, 1], seed=[7, 0], minval=-0.5,
                                                       maxval=1.5), 0.0, 1.0).numpy()
  ours = tf.clip_by_value(trainer.denoise(trainer.ema_model, noisy), 0.0, 1.0).numpy()
  served = evaluation.DiffusionModel(exported_dir, 2).denoise(noisy, _CONFIG.eval.denoise_sigma)
  np.testing.assert_allclose(ours, served, atol=1e-5)


def test_denoiser_ceiling_objectives_and_bad_objective():
  images = tf.random.stateless_uniform([4, 28, 28, 1], seed=[8, 0], minval=-1.0, maxval=1.0)
  labels = tf.zeros([4], tf.int32)
  mse = float(_smoke_denoiser("mse").loss(images, labels))
  log_mse = float(_smoke_denoiser("log_mse").loss(images, labels))
  assert mse > 0.0 and np.isfinite(log_mse) and log_mse < 0.0  # log of a per-image MSE below 1
  with pytest.raises(ValueError, match="objective"):
    _smoke_denoiser("psnr")


def test_denoiser_ceiling_trains_scores_and_skips_what_it_finished(tmp_path, monkeypatch):
  work_dir, results_dir = tmp_path / "work", tmp_path / "results"
  args = ["--profile", "smoke", "--objectives", "log_mse", "--train-steps", "2",
          "--work-dir", str(work_dir), "--results-dir", str(results_dir), "--num-eval-images", "8"]
  denoiser_ceiling.main(args)
  results = json.loads((results_dir / "denoiser_ceiling.json").read_text())
  (result,) = results["objectives"]
  assert (result["experiment"], result["objective"], result["training"]["steps"]) == (
      "baseline", "log_mse", 2)
  assert result["protocol"]["num_images"] == 8 and 0.0 < result["protocol"]["psnr"] < 60.0
  assert "| baseline | log_mse | " in (results_dir / "denoiser_ceiling.md").read_text()
  # A second run reads the finished result instead of training again.
  monkeypatch.setattr(denoiser_ceiling, "ProtocolDenoiserTrainer", None)
  denoiser_ceiling.main(args)
  assert json.loads((results_dir / "denoiser_ceiling.json").read_text()) == results


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
