"""Calls a SavedModel the way TF Serving would see it: in a new Python process that imports only
TensorFlow (none of this project's packages), from a directory outside the repository."""

import json
import os
import subprocess
import sys
import textwrap

_PROJECT_PACKAGES = ("core", "pipeline", "components", "trainer_module", "serving", "benchmarks",
                     "tests")

_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    request = json.loads(sys.argv[2])
    def serve():
        return loaded.signatures["serving_default"](
            labels=tf.constant(request["labels"], tf.int32),
            guidance_scale=tf.constant(request["guidance_scale"], tf.float32),
            num_steps=tf.constant(request["num_steps"], tf.int32),
            seed=tf.constant(request["seed"], tf.int32))["images"].numpy()
    images, again = serve(), serve()
    print(json.dumps({
        "signatures": sorted(loaded.signatures.keys()),
        "shape": list(images.shape), "dtype": str(images.dtype),
        "min": int(images.min()), "max": int(images.max()),
        "checksum": int(images.astype("int64").sum()),
        "checksum_again": int(again.astype("int64").sum()),
        "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in %r),
    }))
""" % (_PROJECT_PACKAGES,))


def call_serving_default(model_dir: str, labels, guidance_scale=1.5, num_steps=3, seed=0,
                         cwd=None) -> dict:
  """Runs serving_default twice in a fresh interpreter; returns a summary of the images (and the
  second call's checksum)."""
  request = {"labels": list(labels), "guidance_scale": guidance_scale, "num_steps": num_steps,
             "seed": seed}
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
  result = subprocess.run(
      [sys.executable, "-c", _SCRIPT, os.path.abspath(model_dir), json.dumps(request)],
      cwd=cwd or os.path.dirname(os.path.abspath(model_dir)), env=env, capture_output=True,
      text=True, check=False, timeout=600)
  if result.returncode != 0:
    raise RuntimeError(f"fresh process failed ({result.returncode}):\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])
