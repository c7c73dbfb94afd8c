"""Serve a pushed model with another sampler, default step count or guidance, without retraining.

  python -m serving.reexport --serving-dir runs/cpu/serving_model --sampler dpmpp_2m --num-steps 10

Reads the latest version under --serving-dir (or --model-dir), keeps its weights and every
sampler setting it records, changes only the ones given, and writes the result as the next version, <serving-dir>/<latest + 1>/, with its own TF Serving warm-up
requests. TF Serving's latest-version policy then serves it; the previous version stays for
rollback. A request's `num_steps` and `guidance_scale` already override the defaults per call:
re-export to change what a request that leaves them out gets, or the sampler itself, which is
fixed at export.
"""

import argparse
import dataclasses
import math
import os
import sys
from typing import Any, Dict, Optional

import tensorflow as tf

from core import config as config_lib
from core import serving_contract
from serving.client import positive_int
from trainer_module import export
from trainer_module import samplers
from trainer_module import unet


def rows_limit(text: str) -> int:
  """--max-rows-per-call: a positive number, or 'none' (returned as 0) for no limit."""
  if text.lower() == "none":
    return 0
  try:
    return positive_int(text)
  except argparse.ArgumentTypeError:
    raise argparse.ArgumentTypeError(
        f"expected a positive number of rows or 'none', got {text!r}") from None


def requested_changes(args: argparse.Namespace) -> Dict[str, Any]:
  """The SamplerConfig fields the command line sets."""
  changes: Dict[str, Any] = {}
  if args.sampler is not None:
    changes["sampler"] = args.sampler
  if args.num_steps is not None:
    changes["num_steps"] = args.num_steps
  if args.guidance is not None:
    changes["guidance_scale"] = args.guidance
  if args.guidance_interval is not None:
    low, high = args.guidance_interval
    changes.update(guidance_min_sigma=low, guidance_max_sigma=None if math.isinf(high) else high)
  if args.max_rows_per_call is not None:
    changes["max_rows_per_call"] = args.max_rows_per_call or None  # 0: no limit
  if args.compute_dtype is not None:
    changes["compute_dtype"] = args.compute_dtype
  if args.network_copies is not None:
    changes["network_copies"] = args.network_copies
  return changes


def check_sampler_config(sampler: config_lib.SamplerConfig) -> None:
  """Rejects settings the exported graph would only refuse at request time."""
  if not 1 <= sampler.num_steps <= sampler.max_steps:
    raise ValueError(f"num_steps must be in 1..{sampler.max_steps}, got {sampler.num_steps}")
  if not math.isfinite(sampler.guidance_scale) or sampler.guidance_scale < 0:
    raise ValueError(f"guidance must be finite and >= 0, got {sampler.guidance_scale}")
  high = sampler.guidance_max_sigma
  if sampler.compute_dtype not in unet.COMPUTE_DTYPES:
    raise ValueError(f"compute dtype must be one of {unet.COMPUTE_DTYPES}, got "
                     f"{sampler.compute_dtype!r}")
  if sampler.guidance_min_sigma < 0 or (high is not None and high < sampler.guidance_min_sigma):
    raise ValueError("the guidance interval must be 0 <= MIN_SIGMA <= MAX_SIGMA, got "
                     f"[{sampler.guidance_min_sigma}, {high}]")


def reexport(source_dir: str, serving_dir: str, profile: config_lib.PipelineConfig,
             changes: Dict[str, Any], version: Optional[int] = None):
  """Writes `source_dir`'s weights with `changes` applied to its recorded sampler settings as
  <serving_dir>/<version>/ (default: one above the highest there). Returns (path, SamplerConfig)."""
  source_dir = serving_contract.resolve_model_dir(source_dir)
  loaded = tf.saved_model.load(source_dir)
  recorded = serving_contract.recorded_sampler_config(loaded, source_dir)
  sampler = dataclasses.replace(recorded, **changes)
  check_sampler_config(sampler)
  existing = serving_contract.numeric_versions(serving_dir)
  if version is None:
    version = (existing[-1] if existing else 0) + 1
  export_dir = os.path.join(serving_dir, str(version))
  if tf.io.gfile.exists(export_dir):
    raise FileExistsError(f"{export_dir} already exists; TF Serving versions are never rewritten")
  export.reexport_sampler(loaded, export_dir, profile.diffusion, sampler)
  return export_dir, sampler


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--serving-dir", required=True,
                      help="TF Serving base path (the Pusher's serving dir): the new version goes here")
  parser.add_argument("--model-dir", default=None,
                      help="the SavedModel (or serving dir) to take the weights from; default: the "
                           "latest version under --serving-dir")
  parser.add_argument("--profile", default=config_lib.DEFAULT_PROFILE,
                      choices=sorted(config_lib.PROFILES),
                      help="the profile the model was trained with (its noise schedule)")
  parser.add_argument("--sampler", choices=samplers.SAMPLERS, default=None)
  parser.add_argument("--num-steps", type=int, default=None,
                      help="default step count of a request that gives none")
  parser.add_argument("--guidance", type=float, default=None,
                      help="default guidance scale (diffusers convention: 1 = the conditional "
                           "model alone, 0 = unconditional, > 1 guided)")
  parser.add_argument("--guidance-interval", type=float, nargs=2, default=None,
                      metavar=("MIN_SIGMA", "MAX_SIGMA"),
                      help="guidance above 1 only at these noise levels (inf = no upper bound)")
  parser.add_argument("--max-rows-per-call", type=rows_limit, default=None, metavar="ROWS",
                      help="network rows per call inside the graph, or 'none' for one call per step")
  parser.add_argument("--compute-dtype", choices=unet.COMPUTE_DTYPES, default=None,
                      help="the served network's arithmetic (bfloat16: faster on CPUs with "
                           "bfloat16 dot products such as AVX512_BF16)")
  parser.add_argument("--network-copies", type=positive_int, default=None, metavar="COPIES",
                      help="copies of the network in the served graph, computing a call's rows "
                           "at once (1: one copy)")
  parser.add_argument("--version", type=int, default=None,
                      help="version number to write (default: the highest there + 1)")
  args = parser.parse_args(argv)
  changes = requested_changes(args)
  if not changes:
    parser.error("nothing to change: give --sampler, --num-steps, --guidance, "
                 "--guidance-interval, --max-rows-per-call, --compute-dtype or --network-copies")
  try:
    export_dir, sampler = reexport(args.model_dir or args.serving_dir, args.serving_dir,
                                   config_lib.profile(args.profile), changes, args.version)
  except (ValueError, FileExistsError, FileNotFoundError) as error:
    parser.error(str(error))
  print(f"wrote {export_dir}: sampler {sampler.sampler}, {sampler.num_steps} steps, guidance "
        f"{sampler.guidance_scale:g} at sigma in [{sampler.guidance_min_sigma:g}, "
        f"{'inf' if sampler.guidance_max_sigma is None else f'{sampler.guidance_max_sigma:g}'}], "
        f"max rows per call {sampler.max_rows_per_call}, {sampler.network_copies} network "
        f"copies, {sampler.compute_dtype}")


if __name__ == "__main__":
  main()
