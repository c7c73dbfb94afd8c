"""Executor of the ServabilityGate: loads the candidate as TF Serving would and replays requests.

TFX's InfraValidator starts a TF Serving binary (Docker or Kubernetes) on the candidate and blesses
it when the model loads and answers. Neither runtime exists on every machine this pipeline runs
on, so this executor reproduces what TF Serving does on load, in a fresh Python process that
imports only TensorFlow and TF Serving's request protos (nothing of this project, which a server
would not have either):
  1. load the `serve` tag-set of `<model>/Format-Serving` into a TF1 Session, as TF Serving's
     SavedModelBundle does: the graph, the variables restored from `variables/`, the init op;
  2. replay `assets.extra/tf_serving_warmup_requests` (TF Serving refuses the model when a record
     fails, or when there are more than 1,000);
  3. send one request per signature of the serving contract (core/serving_contract.py):
     `serving_default` (one digit and one unconditional row, one sampling step) and `denoise`.
A request is checked against its signature as TF Serving's predict handler checks it (the
signature exists, the input names match exactly, the dtypes match, filtered outputs exist), then
run by the signature's tensor names.

Writes into the `blessing` artifact's URI, as TFX's InfraValidator does:
  INFRA_BLESSED or INFRA_NOT_BLESSED  an empty marker file
  servability_report.json             {blessed, reason, model_path, signatures, load_seconds,
                                       requests: [{source, index, signature, seconds, outputs}],
                                       problems: [...], unexercised_signatures, project_modules}
  signature_requests.tfrecord         the contract's requests, as TF Serving PredictionLogs
and sets the custom properties `blessed` (1/0, what TFX's Pusher reads) and `reason`. A candidate
that cannot be served is not an error of the run: the Pusher reads the blessing and pushes
nothing, as with TFX's InfraValidator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Dict, List, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from core import serving_contract
from core import warmup
from core.config import NULL_LABEL
from core.config import ServingConfig

# Keys of the component spec (component.py uses the same constants).
MODEL_KEY = "model"
BLESSING_KEY = "blessing"
TIMEOUT_KEY = "timeout_seconds"

# The InfraBlessing convention of tfx/components/infra_validator/executor.py: the custom property
# TFX's Pusher reads (model_utils.is_infra_validated) and the marker files.
BLESSED_PROPERTY = "blessed"
BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"
REASON_PROPERTY = "reason"
REPORT_FILE = "servability_report.json"
REQUESTS_FILE = "signature_requests.tfrecord"

# The tag-set TF Serving loads.
SERVING_TAGS = ("serve",)
# This project's top-level packages: the fresh process must not have imported any of them.
PROJECT_PACKAGES = ("core", "pipeline", "components", "trainer_module", "serving", "benchmarks",
                    "tests")
# The outputs a client of each contract signature reads.
EXPECTED_OUTPUTS = {
    serving_contract.SERVING_SIGNATURE: [serving_contract.IMAGES_OUTPUT,
                                         serving_contract.IMAGES_FLOAT_OUTPUT],
    serving_contract.DENOISE_SIGNATURE: [serving_contract.DENOISED_IMAGES_OUTPUT],
}
# The line of the fresh process's stdout that carries its result (TensorFlow logs around it).
_RESULT_MARKER = "@@servability@@ "

# Run as `python -c _SCRIPT '<json arguments>'`: self-contained, TensorFlow and TF Serving's protos
# only. Prints one result line; a failure of the model is a result, not a crash.
_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    args = json.loads(sys.argv[1])
    result = {"loaded": False, "signatures": [], "requests": [], "problems": []}

    def finish():
      result["project_modules"] = sorted(
          m for m in sys.modules if m.split(".")[0] in args["project_packages"])
      print(args["marker"] + json.dumps(result), flush=True)
      sys.exit(0)

    def describe(error):
      text = str(error).split("Original stack trace")[0]
      text = " ".join(line.strip() for line in text.splitlines() if line.strip())
      return (type(error).__name__ + ": " + text)[:600]

    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    model_dir = args["model_dir"]
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    start = time.perf_counter()
    try:
      with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, args["tags"], model_dir)
    except Exception as error:  # what TF Serving would log before refusing the model
      result["problems"].append("loading " + model_dir + " failed: " + describe(error))
      finish()
    result["loaded"] = True
    result["load_seconds"] = round(time.perf_counter() - start, 3)
    signatures = {name: s for name, s in meta_graph.signature_def.items()
                  if not name.startswith("__")}  # __saved_model_init_op is not served
    result["signatures"] = sorted(signatures)
    exercised = set()

    def replay(request, source, index):
      name = request.model_spec.signature_name or "serving_default"
      where = source + " request " + str(index) + " (signature " + repr(name) + ")"
      if name not in signatures:
        return where + ": the model has no signature " + repr(name) + "; it has " + repr(
            sorted(signatures))
      exercised.add(name)
      signature = signatures[name]
      missing = sorted(set(signature.inputs) - set(request.inputs))
      unexpected = sorted(set(request.inputs) - set(signature.inputs))
      if missing or unexpected:
        return (where + ": inputs do not match the signature: missing " + repr(missing) +
                ", unexpected " + repr(unexpected))
      for key, tensor in request.inputs.items():
        wanted = signature.inputs[key].dtype
        if tensor.dtype != wanted:
          return (where + ": input " + repr(key) + " is " + tf.as_dtype(tensor.dtype).name +
                  ", the signature expects " + tf.as_dtype(wanted).name)
      outputs = list(request.output_filter) or sorted(signature.outputs)
      absent = sorted(set(outputs) - set(signature.outputs))
      if absent:
        return where + ": the signature has no output(s) " + repr(absent)
      feeds = {signature.inputs[key].name: tf.make_ndarray(tensor)
               for key, tensor in request.inputs.items()}
      fetches = {key: signature.outputs[key].name for key in outputs}
      start = time.perf_counter()
      try:
        values = session.run(fetches, feeds)
      except Exception as error:
        return where + " failed: " + describe(error)
      result["requests"].append({
          "source": source, "index": index, "signature": name,
          "seconds": round(time.perf_counter() - start, 3),
          "outputs": {key: [list(value.shape), str(value.dtype)] for key, value in values.items()}})
      return None

    def records(path):
      return [prediction_log_pb2.PredictionLog.FromString(record)
              for record in tf.data.TFRecordDataset(path).as_numpy_iterator()]

    warmup_file = os.path.join(model_dir, args["warmup_file"])
    result["warmup_records"] = 0
    if tf.io.gfile.exists(warmup_file):
      try:
        logs = records(warmup_file)
      except Exception as error:
        logs = []
        result["problems"].append("the warm-up file " + warmup_file + " cannot be read: " +
                                  describe(error))
      result["warmup_records"] = len(logs)
      if len(logs) > args["max_warmup_records"]:
        result["problems"].append(
            "the warm-up file holds " + str(len(logs)) + " records; TF Serving reads at most " +
            str(args["max_warmup_records"]) + " and refuses the model")
        logs = []
      for index, log in enumerate(logs):
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
          result["problems"].append("warm-up request " + str(index) + " is a " + str(kind) +
                                    "; this gate replays predict_log records only")
          continue
        problem = replay(log.predict_log.request, "warm-up", index)
        if problem:
          result["problems"].append(problem)
    for index, log in enumerate(records(args["requests_file"])):
      problem = replay(log.predict_log.request, "signature", index)
      if problem:
        result["problems"].append(problem)
    for name, keys in sorted(args["expected_outputs"].items()):
      if name in signatures:
        absent = sorted(set(keys) - set(signatures[name].outputs))
        if absent:
          result["problems"].append("signature " + repr(name) + " has no output(s) " +
                                    repr(absent) + " that clients read")
    result["unexercised_signatures"] = sorted(set(signatures) - exercised)
    finish()
""")


def signature_requests(
    model_name: str = serving_contract.DEFAULT_MODEL_NAME) -> List[predict_pb2.PredictRequest]:
  """One cheap request per signature of the serving contract, in TF Serving's gRPC form."""
  # One digit and one unconditional row at one step: the whole guided sampler, at little cost.
  generate = serving_contract.build_grpc_request(
      [0, NULL_LABEL], guidance_scale=1.5, num_steps=1, seed=0, model_name=model_name)
  denoise = predict_pb2.PredictRequest()
  denoise.model_spec.name = model_name
  denoise.model_spec.signature_name = serving_contract.DENOISE_SIGNATURE
  denoise.inputs[serving_contract.NOISY_IMAGES].CopyFrom(tf.make_tensor_proto(
      np.full((1, *serving_contract.IMAGE_SHAPE), 0.5, np.float32)))
  denoise.inputs[serving_contract.NOISE_SIGMA].CopyFrom(
      tf.make_tensor_proto(0.4, dtype=tf.float32, shape=[]))
  return [generate, denoise]


def write_requests(path: str, requests: Sequence[predict_pb2.PredictRequest]) -> None:
  """Writes `requests` as a TFRecord of PredictionLogs (the warm-up file's format)."""
  with tf.io.TFRecordWriter(path) as writer:
    for request in requests:
      writer.write(prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())


def _absolute(path: str) -> str:
  """An absolute local path (the fresh process runs elsewhere), or a URI (gs://...) as it is."""
  return path if "://" in path else os.path.abspath(path)


def check_servability(model_dir: str, requests_file: str,
                      timeout_seconds: int) -> Dict[str, Any]:
  """Loads `model_dir` and replays its warm-up and `requests_file`'s requests in a fresh process.

  Returns the fresh process's result (see _SCRIPT) with `blessed` and `reason` added.
  """
  arguments = {
      "model_dir": _absolute(model_dir), "requests_file": _absolute(requests_file),
      "tags": list(SERVING_TAGS),
      "warmup_file": os.path.join(warmup.WARMUP_DIR, warmup.WARMUP_FILE),
      "max_warmup_records": warmup.MAX_WARMUP_RECORDS, "expected_outputs": EXPECTED_OUTPUTS,
      "project_packages": list(PROJECT_PACKAGES), "marker": _RESULT_MARKER,
  }
  # Nothing of this project on the path: the process sees what a server would.
  env = {key: value for key, value in os.environ.items()
         if key not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  with tempfile.TemporaryDirectory(prefix="servability-") as cwd:
    try:
      process = subprocess.run(
          [sys.executable, "-c", _SCRIPT, json.dumps(arguments)], cwd=cwd, env=env,
          capture_output=True, text=True, timeout=timeout_seconds, check=False)
    except subprocess.TimeoutExpired:
      return {"loaded": False, "blessed": False, "problems": [], "reason": (
          f"servability gate: {model_dir} was not loaded and answered within {timeout_seconds} s "
          "(serving.servability_timeout_s)")}
  lines = [line for line in process.stdout.splitlines() if line.startswith(_RESULT_MARKER)]
  if not lines:
    tail = " | ".join(process.stderr.strip().splitlines()[-5:])
    return {"loaded": False, "blessed": False, "problems": [], "reason": (
        f"servability gate: the serving process for {model_dir} exited with code "
        f"{process.returncode} before it reported: {tail}")}
  result = json.loads(lines[-1][len(_RESULT_MARKER):])
  result["blessed"] = result["loaded"] and not result["problems"]
  if result["blessed"]:
    served = sorted({request["signature"] for request in result["requests"]})
    result["reason"] = (
        f"servability gate: loaded in {result['load_seconds']:.1f} s; answered "
        f"{result['warmup_records']} warm-up request(s) and one request to each of {served}")
    if result["unexercised_signatures"]:
      result["reason"] += (f"; signatures outside the serving contract, not called: "
                           f"{result['unexercised_signatures']}")
  else:
    result["reason"] = "servability gate: " + "; ".join(result["problems"])
  return result


class Executor(base_executor.BaseExecutor):
  """Blesses the candidate when TF Serving could load it and answer its requests."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
    timeout = int(exec_properties.get(TIMEOUT_KEY) or ServingConfig().servability_timeout_s)
    model_dir = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    fileio.makedirs(blessing.uri)
    requests_file = os.path.join(blessing.uri, REQUESTS_FILE)
    write_requests(requests_file, signature_requests())

    result = check_servability(model_dir, requests_file, timeout)
    result["model_path"] = model_dir
    io_utils.write_string_file(os.path.join(blessing.uri, REPORT_FILE),
                               json.dumps(result, indent=2, sort_keys=True))
    marker = BLESSED_FILE if result["blessed"] else NOT_BLESSED_FILE
    io_utils.write_string_file(os.path.join(blessing.uri, marker), "")
    blessing.set_int_custom_property(BLESSED_PROPERTY, int(result["blessed"]))
    blessing.set_string_custom_property(REASON_PROPERTY, result["reason"])
    if result["blessed"]:
      logging.info("%s", result["reason"])
    else:
      logging.warning("%s; the Pusher will not push it (report: %s)", result["reason"],
                      os.path.join(blessing.uri, REPORT_FILE))

