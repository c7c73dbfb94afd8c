"""One typed configuration for the whole project, with named profiles.

Profiles differ only in numbers (data slice, widths, steps, sample counts, thresholds), never in
code paths. Every component receives the part it needs as JSON (`to_json` / `from_json`), so the
same dataclasses describe the pipeline, the Trainer's `run_fn`, the Evaluator and the benchmarks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple, Type, TypeVar

T = TypeVar("T")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The project carries its own copy of MNIST so a fresh clone runs with nothing beside it.
EMBEDDED_MNIST_DIR = os.path.join(REPO_ROOT, "data", "mnist")

NUM_CLASSES = 10
# The label value that asks for an unconditional sample (classifier-free guidance's null class).
NULL_LABEL = NUM_CLASSES
IMAGE_SIZE = 28
# Feature names shared by ExampleGen, Transform, the trainers and the evaluator.
IMAGE_KEY = "image"
LABEL_KEY = "label"


def _from_dict(cls: Type[T], data: Dict[str, Any]) -> T:
  """Builds a (nested) dataclass from a dict, rejecting unknown keys."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(data) - set(fields)
  if unknown:
    raise ValueError(f"Unknown {cls.__name__} keys: {sorted(unknown)}")
  kwargs = {}
  for name, value in data.items():
    field_type = fields[name].type
    nested = _NESTED.get(field_type)
    if nested is not None and isinstance(value, dict):
      value = _from_dict(nested, value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[name] = value
  return cls(**kwargs)


class _JsonMixin:

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, data: Dict[str, Any]):
    return _from_dict(cls, data)

  @classmethod
  def from_json(cls, text: str):
    return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True)
class DataConfig(_JsonMixin):
  """Where the examples come from and how much of them the pipeline reads.

  `data_dir` is either one MNIST directory (the four idx(.gz) files: span 0), or a data root
  holding spans as TFX lays them out, `<data_dir>/span-{SPAN}/`, each with the four files.
  """
  source: str = "idx"  # "idx": MNIST idx(.gz) files in data_dir; "tfds": tensorflow_datasets mnist.
  data_dir: str = EMBEDDED_MNIST_DIR
  span: Optional[int] = None  # the span a run processes; None = the latest complete one
  # The span whose eval part the Evaluator scores on, read by its own ExampleGen; None = the
  # processed span's (the MNIST test set in spans made by pipeline.spans, so runs compare).
  eval_span: Optional[int] = None
  # Keep only the first N examples of each split (None = all). The smoke profile reads a slice.
  max_train_examples: Optional[int] = None
  max_eval_examples: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class UNetConfig(_JsonMixin):
  """The denoising network (trainer_module/unet.py)."""
  channels: Tuple[int, ...] = (32, 48, 64)  # per resolution: 28, 14, 7 (halved by patch_size)
  patch_size: int = 1  # 2: space-to-depth stem, so the first level runs at 14x14
  res_blocks_per_level: int = 1
  # Skip connections into the decoder: "every_layer" (DDPM/ADM: from the stem, every residual
  # block and every downsampling conv, so each level's decoder has res_blocks_per_level + 1
  # blocks) or "res_blocks" (only from the residual blocks: one decoder block fewer per level).
  # Why res_blocks: docs/design.md#decoder-skips.
  decoder_skips: str = "res_blocks"
  attention_at_lowest: bool = True  # self-attention at 7x7 (49 tokens: cheap)
  # On the way up: "nearest" + a 3x3 conv, or "bilinear" with no conv (the following residual
  # block's convs do the mixing, and the costly 28x28 conv goes).
  upsample: str = "bilinear"
  embedding_dim: int = 128  # time + class embedding width
  groups: int = 8  # GroupNorm groups
  dropout: float = 0.0


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(_JsonMixin):
  """Noise schedule and objective (trainer_module/schedule.py)."""
  prediction: str = "v"  # "v" or "eps"
  # Cosine schedule over continuous diffusion time t in [0, 1], clamped so rates stay finite.
  min_signal_rate: float = 0.02
  max_signal_rate: float = 0.9995
  # Min-SNR-gamma loss weighting; 0 = the plain v loss, which samples better here
  # (docs/design.md#min-snr-weighting).
  min_snr_gamma: float = 0.0
  label_dropout: float = 0.1  # share of labels replaced by the null class (classifier-free guidance)
  # How training draws diffusion times (schedule.sample_training_times): "uniform" in t, or
  # "lognormal": ln(noise_rate / signal_rate) ~ N(log_sigma_mean, log_sigma_std), EDM's (Karras et
  # al. 2022) -1.2 / 1.2 by default, which trains more at the middle noise levels.
  training_times: str = "uniform"
  log_sigma_mean: float = -1.2
  log_sigma_std: float = 1.2


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonMixin):
  """The diffusion training loop (trainer_module/train.py)."""
  # Batches of 32 rather than 64: twice the updates for the same images and time
  # (docs/design.md#batch-size-and-steps).
  batch_size: int = 32
  train_steps: int = 7200  # 230,400 images
  learning_rate: float = 2e-3
  warmup_steps: int = 100
  # Capped by the warm-up, decay = min(ema_decay, (1 + step) / (10 + step)), which still binds at
  # 7,200 steps: an average over about the last 800 steps (docs/design.md#ema).
  ema_decay: float = 0.999
  log_every_steps: int = 100
  checkpoint_every_steps: int = 400
  seed: int = 0
  shuffle_buffer: int = 10000
  # Scheduled retraining: train on the last `window_spans` spans (fewer while fewer exist), and
  # when a blessed model of the same network exists, start from it and train this many more steps.
  window_spans: int = 5
  warm_start: bool = True
  warm_start_steps: int = 1800


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(_JsonMixin):
  """The judge classifier (trainer_module/classifier.py). Class agreement is only as meaningful
  as the judge is accurate on real digits (docs/design.md#judge-classifier)."""
  filters: Tuple[int, ...] = (32, 64)
  convs_per_level: int = 2  # 3x3 convs before each 2x2 max-pool
  dropout: float = 0.25  # before and after the feature layer, in training only
  feature_dim: int = 128  # penultimate layer: the features Frechet distance is computed on
  batch_size: int = 128
  train_steps: int = 2400
  learning_rate: float = 2e-3  # peak; cosine-decayed to 0 at train_steps
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class SamplerConfig(_JsonMixin):
  """Defaults and limits of the exported guided sampler (trainer_module/samplers.py, export.py).

  The defaults are what a request that leaves steps and guidance out gets, and so what the
  Evaluator scores: DDIM at 20 steps, guidance 1.6 applied only at noise levels 1 <= sigma <= 5
  (docs/design.md#default-sampler).
  """
  sampler: str = "ddim"  # "ddim", "dpmpp_2m" (both deterministic) or "ancestral" (DDPM)
  num_steps: int = 20
  # Diffusers convention: 0 unconditional, 1 the conditional model alone, > 1 guided.
  guidance_scale: float = 1.6
  # Guidance above 1 only at noise levels sigma = noise_rate / signal_rate in this interval
  # (samplers.step_guidance_scale); elsewhere the conditional model alone, at half the cost.
  # 0 and None (no upper bound) guide every step.
  guidance_min_sigma: float = 1.0
  guidance_max_sigma: Optional[float] = 5.0
  max_steps: int = 1000
  max_batch: int = 256
  # The network runs on at most this many rows per call (samplers.chunked_network), which bounds
  # the activations a big request holds; None = one call per step. 200 is one call per guided
  # step of 100 digits (docs/design.md#rows-per-network-call).
  max_rows_per_call: Optional[int] = 200
  # Copies of the network's ops in the served graph, each computing an equal share of a call's
  # rows at the same time (samplers.concurrent_network); 1 = one copy. Two are faster from 10
  # digits up, for a larger graph and a longer export (docs/design.md#network-copies).
  network_copies: int = 2
  # The served network's arithmetic: "float32", or "bfloat16" (the same float32 weights, computing
  # in bfloat16) for CPUs with bfloat16 dot products, where it is faster
  # (docs/design.md#compute-dtype). Recorded in the SavedModel.
  compute_dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class EvalConfig(_JsonMixin):
  """The custom Evaluator (components/diffusion_evaluator)."""
  # Reference protocol: images in [0, 1], Gaussian noise of this std, clipped, one-step x0 prediction.
  denoise_sigma: float = 0.4
  denoise_num_images: Optional[int] = None  # None = the whole eval split (10,000 on MNIST)
  denoise_curve_sigmas: Tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8)
  denoise_curve_num_images: int = 2000
  # The same reference-protocol numbers computed by TFMA too, per digit slice, written to the
  # evaluation artifact's tfma/ directory (on the same denoise_num_images images).
  tfma_denoising: bool = True
  samples_per_class: int = 100
  grid_seeds: int = 8  # columns of the sample grid (one row per digit)
  batch_size: int = 250
  seed: int = 0
  # Blessing: absolute thresholds, then "not worse than the baseline" within these tolerances.
  min_psnr: float = 20.0
  min_class_agreement: float = 0.9
  max_frechet_ratio: Optional[float] = None  # Frechet distance / real-vs-real floor
  psnr_tolerance_db: float = 0.1
  agreement_tolerance: float = 0.01
  # Bless a candidate that misses the baseline comparison (absolute thresholds still apply),
  # recording this reason in the blessing and the report. None: compare as usual.
  force_bless_reason: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class DriftConfig(_JsonMixin):
  """The drift gate: statistics of a new span against the previous span's (TFDV comparators).

  A feature whose distance exceeds its threshold stops the run before Transform.
  """
  # Far above the distances between real MNIST spans, below a missing digit's or inverted
  # images' (docs/design.md#drift-gate).
  label_max_jensen_shannon: float = 0.03  # the digits' mix
  pixel_max_jensen_shannon: float = 0.02  # the distribution of pixel values


@dataclasses.dataclass(frozen=True)
class ServingConfig(_JsonMixin):
  """The serving dir TF Serving watches."""
  keep_versions: int = 3  # pushed versions kept; older ones go once a new one is complete


@dataclasses.dataclass(frozen=True)
class PipelineConfig(_JsonMixin):
  """Everything a pipeline run needs. Build one with `profile(name, **overrides)`."""
  profile: str = "cpu"
  pipeline_name: str = "mnist-diffusion"
  pipeline_root: str = os.path.join("runs", "pipeline_root")
  metadata_path: Optional[str] = None  # None = <pipeline_root>/metadata.sqlite
  serving_dir: str = os.path.join("runs", "serving_model")
  enable_cache: bool = True
  beam_pipeline_args: Tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
  data: DataConfig = DataConfig()
  unet: UNetConfig = UNetConfig()
  diffusion: DiffusionConfig = DiffusionConfig()
  train: TrainConfig = TrainConfig()
  classifier: ClassifierConfig = ClassifierConfig()
  sampler: SamplerConfig = SamplerConfig()
  eval: EvalConfig = EvalConfig()
  drift: DriftConfig = DriftConfig()
  serving: ServingConfig = ServingConfig()

  @property
  def metadata_sqlite(self) -> str:
    return self.metadata_path or os.path.join(self.pipeline_root, "metadata.sqlite")


_NESTED = {
    "DataConfig": DataConfig, "UNetConfig": UNetConfig, "DiffusionConfig": DiffusionConfig,
    "TrainConfig": TrainConfig, "ClassifierConfig": ClassifierConfig,
    "SamplerConfig": SamplerConfig, "EvalConfig": EvalConfig, "DriftConfig": DriftConfig,
    "ServingConfig": ServingConfig,
}
_NESTED.update({cls: cls for cls in list(_NESTED.values())})


def _smoke() -> PipelineConfig:
  """The whole pipeline in a few minutes on a slice of MNIST: for tests, not for quality."""
  return PipelineConfig(
      profile="smoke",
      data=DataConfig(max_train_examples=512, max_eval_examples=200),
      unet=UNetConfig(channels=(8, 16, 16), embedding_dim=32, groups=4),
      train=TrainConfig(batch_size=32, train_steps=30, warmup_steps=5, log_every_steps=10,
                        checkpoint_every_steps=10, shuffle_buffer=512, warm_start_steps=10),
      classifier=ClassifierConfig(filters=(8, 16), feature_dim=32, batch_size=64, train_steps=30),
      # One copy of the network: a smoke export traces in about half the time (the tests export
      # many); the tiny sampler of tests/test_export.py keeps the default two.
      sampler=SamplerConfig(num_steps=4, max_batch=64, network_copies=1),
      eval=EvalConfig(denoise_curve_sigmas=(0.2, 0.4), denoise_curve_num_images=100,
                      samples_per_class=2, grid_seeds=2, batch_size=100,
                      min_psnr=0.0, min_class_agreement=0.0),
  )


def _cpu() -> PipelineConfig:
  """The default: recognisable, correctly conditioned digits in well under 45 minutes on 2 cores."""
  return PipelineConfig(profile="cpu")


# The `full` profile: the cpu network and recipe on four times the training images, served at
# guidance 1.5, with blessing thresholds a little below its measured figures so that they catch
# regressions (docs/design.md#full-profile).
FULL_TRAIN_STEPS = 4 * TrainConfig.train_steps
FULL_GUIDANCE_SCALE = 1.5


def _full() -> PipelineConfig:
  """The best samples measured on this CPU: the cpu recipe trained 4x longer, scored on 1,000
  samples per digit."""
  return PipelineConfig(
      profile="full",
      train=TrainConfig(train_steps=FULL_TRAIN_STEPS, warm_start_steps=FULL_TRAIN_STEPS // 4),
      sampler=SamplerConfig(guidance_scale=FULL_GUIDANCE_SCALE),
      eval=EvalConfig(samples_per_class=1000, min_psnr=22.5,
                      min_class_agreement=0.99, max_frechet_ratio=2.5),
  )


PROFILES = {"smoke": _smoke, "cpu": _cpu, "full": _full}
DEFAULT_PROFILE = "cpu"


def profile(name: str = DEFAULT_PROFILE, **overrides: Any) -> PipelineConfig:
  """Returns the named profile, with top-level fields replaced by `overrides`."""
  if name not in PROFILES:
    raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}")
  config = PROFILES[name]()
  return dataclasses.replace(config, **overrides) if overrides else config
