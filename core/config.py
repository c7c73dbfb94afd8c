"""One typed configuration for the whole project, with named profiles.

Profiles differ only in numbers (data slice, widths, steps, sample counts, thresholds), never in
code paths. Every component receives the part it needs as JSON (`to_json` / `from_json`), so the
same dataclasses describe the pipeline, the Trainer's `run_fn`, the Evaluator and the benchmarks.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar

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

# The values a choice field takes; the modules that act on them import these.
SOURCES = ("idx", "tfds")
PREDICTIONS = ("v", "eps")
TRAINING_TIME_DISTRIBUTIONS = ("uniform", "lognormal")
UPSAMPLE_MODES = ("nearest_conv", "bilinear")
DECODER_SKIPS = ("every_layer", "res_blocks")
SAMPLERS = ("ddim", "dpmpp_2m", "ancestral")
COMPUTE_DTYPES = ("float32", "bfloat16")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")


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

  def __post_init__(self):
    _validate(self)

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
  # On the way up: "nearest_conv" (nearest + a 3x3 conv), or "bilinear" with no conv (the following residual
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
  # tf.distribute strategy of the training loop: "none" (one device), "mirrored" (every local
  # GPU, else every logical CPU) or "multi_worker" (MultiWorkerMirroredStrategy; the cluster
  # comes from TF_CONFIG, as Vertex AI and Kubeflow set it). batch_size stays the global batch,
  # split across replicas (docs/cluster.md).
  distribution: str = "none"
  # Fault injection for tests: the batch of this (1-based) step is replaced by NaN, so the
  # divergence guard stops the run there. None in every real run.
  poison_step: Optional[int] = None


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
  # The reference-protocol numbers (the blessing's) computed by TFMA's Beam pipeline on the
  # component's beam_pipeline_args, overall and per digit slice, written to the evaluation
  # artifact's tfma/ directory. False: computed in the executor's process, no slices.
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
  # The servability gate's limit for loading the candidate and answering its requests in a fresh
  # process (TFX InfraValidator's max_loading_time_seconds default); past it, not blessed.
  servability_timeout_s: int = 300


# Validation: every config object checks its fields when built, so a bad value is refused with
# its name before anything runs. Each rule: (field, test, what the field must be).
def _positive(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
      value) and value > 0


def _whole(minimum: int) -> Callable[[Any], bool]:
  return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
  return lambda value: value is None or test(value)


def _fraction(value) -> bool:  # [0, 1)
  return isinstance(value, (int, float)) and 0 <= value < 1


def _non_negative(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
      value) and value >= 0


def _one_of(choices) -> Tuple[Callable[[Any], bool], str]:
  return (lambda value: value in choices), f"one of {list(choices)}"


def _all(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
  return lambda values: isinstance(values, tuple) and len(values) > 0 and all(map(test, values))


_WHOLE_0, _WHOLE_1 = (_whole(0), ">= 0 (a whole number)"), (_whole(1), ">= 1 (a whole number)")
_POSITIVE = (_positive, "> 0")
_RULES = {
    "DataConfig": [
        ("source", *_one_of(SOURCES)),
        ("span", _optional(_whole(0)), "None or >= 0"),
        ("eval_span", _optional(_whole(0)), "None or >= 0"),
        ("max_train_examples", _optional(_whole(1)), "None or >= 1"),
        ("max_eval_examples", _optional(_whole(1)), "None or >= 1")],
    "UNetConfig": [
        ("channels", _all(_whole(1)), "a non-empty list of whole numbers >= 1"),
        ("patch_size", *_WHOLE_1), ("res_blocks_per_level", *_WHOLE_1),
        ("decoder_skips", *_one_of(DECODER_SKIPS)), ("upsample", *_one_of(UPSAMPLE_MODES)),
        ("embedding_dim", *_WHOLE_1), ("groups", *_WHOLE_1), ("dropout", _fraction, "in [0, 1)")],
    "DiffusionConfig": [
        ("prediction", *_one_of(PREDICTIONS)),
        ("min_signal_rate", _fraction, "in [0, 1)"), ("max_signal_rate", _positive, "> 0"),
        ("min_snr_gamma", _non_negative, ">= 0"), ("label_dropout", _fraction, "in [0, 1)"),
        ("training_times", *_one_of(TRAINING_TIME_DISTRIBUTIONS)),
        ("log_sigma_std", *_POSITIVE)],
    "TrainConfig": [
        ("batch_size", *_WHOLE_1), ("train_steps", *_WHOLE_1), ("learning_rate", *_POSITIVE),
        ("warmup_steps", *_WHOLE_0), ("ema_decay", _fraction, "in [0, 1)"),
        ("log_every_steps", *_WHOLE_1), ("checkpoint_every_steps", *_WHOLE_1),
        ("shuffle_buffer", *_WHOLE_1), ("window_spans", *_WHOLE_1),
        ("warm_start_steps", *_WHOLE_1), ("distribution", *_one_of(DISTRIBUTIONS)),
        ("poison_step", _optional(_whole(1)), "None or >= 1")],
    "ClassifierConfig": [
        ("filters", _all(_whole(1)), "a non-empty list of whole numbers >= 1"),
        ("convs_per_level", *_WHOLE_1), ("dropout", _fraction, "in [0, 1)"),
        ("feature_dim", *_WHOLE_1), ("batch_size", *_WHOLE_1), ("train_steps", *_WHOLE_1),
        ("learning_rate", *_POSITIVE)],
    "SamplerConfig": [
        ("sampler", *_one_of(SAMPLERS)), ("num_steps", *_WHOLE_1), ("max_steps", *_WHOLE_1),
        ("guidance_scale", _non_negative, ">= 0"),
        ("guidance_min_sigma", _optional(_non_negative), "None or >= 0"),
        ("guidance_max_sigma", _optional(_positive), "None or > 0"),
        ("max_batch", *_WHOLE_1), ("max_rows_per_call", _optional(_whole(1)), "None or >= 1"),
        ("network_copies", *_WHOLE_1), ("compute_dtype", *_one_of(COMPUTE_DTYPES))],
    "EvalConfig": [
        ("denoise_sigma", *_POSITIVE),
        ("denoise_num_images", _optional(_whole(1)), "None or >= 1"),
        ("denoise_curve_sigmas", _all(_positive), "a non-empty list of numbers > 0"),
        ("denoise_curve_num_images", *_WHOLE_1), ("samples_per_class", *_WHOLE_1),
        ("grid_seeds", *_WHOLE_1), ("batch_size", *_WHOLE_1),
        ("min_psnr", _non_negative, ">= 0"),
        ("min_class_agreement", lambda v: _non_negative(v) and v <= 1, "in [0, 1]"),
        ("max_frechet_ratio", _optional(_positive), "None or > 0"),
        ("psnr_tolerance_db", _non_negative, ">= 0"),
        ("agreement_tolerance", _non_negative, ">= 0")],
    "DriftConfig": [
        ("label_max_jensen_shannon", lambda v: _non_negative(v) and v <= 1, "in [0, 1]"),
        ("pixel_max_jensen_shannon", lambda v: _non_negative(v) and v <= 1, "in [0, 1]")],
    "ServingConfig": [("keep_versions", *_WHOLE_1), ("servability_timeout_s", *_WHOLE_1)],
}
_SECTIONS = {"DataConfig": "data", "UNetConfig": "unet", "DiffusionConfig": "diffusion",
             "TrainConfig": "train", "ClassifierConfig": "classifier", "SamplerConfig": "sampler",
             "EvalConfig": "eval", "DriftConfig": "drift", "ServingConfig": "serving"}


def _validate(config) -> None:
  """Raises ValueError naming the first field of `config` that breaks its rule."""
  name = type(config).__name__
  section = _SECTIONS.get(name)
  for field, test, wanted in _RULES.get(name, ()):
    value = getattr(config, field)
    if not test(value):
      raise ValueError(f"config {section}.{field} must be {wanted}, got {value!r}")
  # Rules that tie two fields together.
  if isinstance(config, UNetConfig):
    for channels in config.channels:
      if channels % config.groups:
        raise ValueError(f"config unet.groups ({config.groups}) must divide every level's "
                         f"channels, got {list(config.channels)}")
  if isinstance(config, DiffusionConfig) and not (
      config.min_signal_rate < config.max_signal_rate < 1):
    raise ValueError("config diffusion needs min_signal_rate < max_signal_rate < 1, got "
                     f"{config.min_signal_rate} and {config.max_signal_rate}")
  if isinstance(config, SamplerConfig):
    if config.num_steps > config.max_steps:
      raise ValueError(f"config sampler.num_steps ({config.num_steps}) must be <= "
                       f"sampler.max_steps ({config.max_steps})")
    if (config.guidance_max_sigma is not None and config.guidance_min_sigma is not None
        and config.guidance_max_sigma < config.guidance_min_sigma):
      raise ValueError("config sampler.guidance_max_sigma must be >= guidance_min_sigma")


def config_keys(config: "PipelineConfig") -> Tuple[str, ...]:
  """Every settable key of `config`, dotted for nested fields ('train.train_steps')."""
  keys = []
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      keys.extend(f"{field.name}.{sub.name}" for sub in dataclasses.fields(value))
    else:
      keys.append(field.name)
  return tuple(keys)


def parse_value(text: str) -> Any:
  """A command-line value: JSON where it parses (numbers, true/false, null, lists), else text."""
  try:
    value = json.loads(text)
  except ValueError:
    return text
  return tuple(value) if isinstance(value, list) else value


def override(config: "PipelineConfig", key: str, value: Any) -> "PipelineConfig":
  """`config` with the (dotted) `key` set to `value`, validated.

  Raises:
    ValueError: an unknown key (naming the closest known ones) or a value its field refuses.
  """
  keys = config_keys(config)
  if key not in keys:
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"Unknown config key {key!r}{hint}")
  section, _, field = key.rpartition(".")
  if not section:
    return dataclasses.replace(config, **{field: value})
  return dataclasses.replace(
      config, **{section: dataclasses.replace(getattr(config, section), **{field: value})})


@dataclasses.dataclass(frozen=True)
class PipelineConfig(_JsonMixin):
  """Everything a pipeline run needs. Build one with `profile(name, **overrides)`."""
  profile: str = "cpu"
  pipeline_name: str = "mnist-diffusion"
  pipeline_root: str = os.path.join("runs", "pipeline_root")
  metadata_path: Optional[str] = None  # None = <pipeline_root>/metadata.sqlite
  # ML Metadata on a MySQL-compatible server, "HOST:PORT/DATABASE" (user and password from the
  # MLMD_MYSQL_USER / MLMD_MYSQL_PASSWORD environment variables); None = the SQLite file above.
  metadata_mysql: Optional[str] = None
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
