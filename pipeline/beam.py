"""Beam pipeline arguments for the data components, as named presets, and local portable services.

  in-memory      DirectRunner in this process (the profile's own args)
  multi-process  DirectRunner with one worker process per core
  portable       PortableRunner against a job server, SDK workers from an external worker pool:
                 the portability framework that Flink, Spark and Dataflow run pipelines through

The presets apply to the Beam pipelines the components run inside (ExampleGen, StatisticsGen,
Transform, ...), under either orchestrator (LocalDagRunner or BeamDagRunner).

`local_services(args)` completes portable args that name no job endpoint or no worker pool: it
starts Beam's own job server (local_job_service_main) and worker pool (worker_pool_main) on free
ports, waits until they accept connections and stops them when the block ends, even on error.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Sequence, Tuple

IN_MEMORY = "in-memory"
MULTI_PROCESS = "multi-process"
PORTABLE = "portable"
PRESETS = (IN_MEMORY, MULTI_PROCESS, PORTABLE)

PORTABLE_RUNNER = "PortableRunner"
EXTERNAL = "EXTERNAL"
LOCALHOST = "localhost"
# How long a local service may take to accept connections (a cold Beam import takes ~10 s here).
SERVICE_START_TIMEOUT_S = 120.0
_POLL_S = 0.2


def preset_args(preset: str, in_memory_args: Sequence[str] = (),
                num_workers: Optional[int] = None, job_endpoint: Optional[str] = None,
                worker_pool: Optional[str] = None) -> Tuple[str, ...]:
  """The Beam args of `preset`.

  Args:
    preset: one of PRESETS.
    in_memory_args: the in-memory preset's args (the profile's beam_pipeline_args).
    num_workers: multi-process worker count (default: os.cpu_count()).
    job_endpoint: portable job server HOST:PORT; None leaves it for local_services to start.
    worker_pool: portable worker pool HOST:PORT (EXTERNAL environment); None leaves it for
      local_services to start.
  """
  if preset == IN_MEMORY:
    return tuple(in_memory_args)
  if preset == MULTI_PROCESS:
    return ("--direct_running_mode=multi_processing",
            f"--direct_num_workers={num_workers or os.cpu_count() or 1}")
  if preset == PORTABLE:
    args = [f"--runner={PORTABLE_RUNNER}", f"--environment_type={EXTERNAL}"]
    if job_endpoint:
      args.append(f"--job_endpoint={job_endpoint}")
    if worker_pool:
      args.append(f"--environment_config={worker_pool}")
    return tuple(args)
  raise ValueError(f"Unknown Beam preset {preset!r}; choose one of {PRESETS}")


def arg_value(args: Sequence[str], name: str) -> Optional[str]:
  """The value of `--name=value` or `--name value` in `args` (the last wins, as in Beam)."""
  value = None
  flag = f"--{name}"
  for i, arg in enumerate(args):
    if arg.startswith(flag + "="):
      value = arg[len(flag) + 1:]
    elif arg == flag and i + 1 < len(args):
      value = args[i + 1]
  return value


def free_port() -> int:
  """A TCP port nothing listens on now (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind((LOCALHOST, 0))
    return sock.getsockname()[1]


def _wait_until_listening(process: subprocess.Popen, port: int, name: str, log_path: str,
                          timeout_s: float) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if process.poll() is not None:
      with open(log_path) as f:
        raise RuntimeError(f"Beam {name} exited with code {process.returncode}:\n"
                           f"{f.read()[-4000:]}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
      if sock.connect_ex((LOCALHOST, port)) == 0:
        return
    time.sleep(_POLL_S)
  raise TimeoutError(f"Beam {name} did not listen on port {port} within {timeout_s:.0f} s "
                     f"(log: {log_path})")


def _worker_env() -> dict:
  """This environment with the running interpreter's bin first on PATH: the worker pool starts
  SDK workers as `python` from PATH, and they must import this project's packages."""
  env = dict(os.environ)
  env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
  project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(
      path for path in (project_root, env.get("PYTHONPATH")) if path)
  return env


def _stop(process: subprocess.Popen) -> None:
  """Stops a service and the SDK workers it started (its own process group)."""
  if process.poll() is not None:
    return
  try:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=10)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  except ProcessLookupError:
    pass


@contextlib.contextmanager
def local_services(args: Sequence[str], log_dir: Optional[str] = None,
                   timeout_s: float = SERVICE_START_TIMEOUT_S) -> Iterator[List[str]]:
  """Yields `args`, completed with local services where a portable pipeline needs them.

  With --runner=PortableRunner and no --job_endpoint, starts a job server; with
  --environment_type=EXTERNAL and no --environment_config, starts a worker pool. Other args are
  yielded unchanged and start nothing. The services' logs go to `log_dir` (default: a new
  temporary dir, left for inspection).
  """
  args = list(args)
  if arg_value(args, "runner") != PORTABLE_RUNNER:
    yield args
    return
  commands = []
  if not arg_value(args, "job_endpoint"):
    port = free_port()
    commands.append(("job server", port, f"--job_endpoint={LOCALHOST}:{port}",
                     ["-m", "apache_beam.runners.portability.local_job_service_main",
                      f"--port={port}"]))
  if (arg_value(args, "environment_type") or "").upper() == EXTERNAL and not arg_value(
      args, "environment_config"):
    port = free_port()
    commands.append(("worker pool", port, f"--environment_config={LOCALHOST}:{port}",
                     ["-m", "apache_beam.runners.worker.worker_pool_main",
                      f"--service_port={port}"]))
  if not commands:
    yield args
    return
  log_dir = log_dir or tempfile.mkdtemp(prefix="beam_services_")
  os.makedirs(log_dir, exist_ok=True)
  env = _worker_env()
  processes = []
  try:
    # Both start at once (each spends seconds importing Beam), then both are waited for.
    for name, port, arg, command in commands:
      log_path = os.path.join(log_dir, name.replace(" ", "_") + ".log")
      with open(log_path, "ab") as log:
        # A process group of its own, so that stopping it also stops the SDK workers it forked.
        process = subprocess.Popen([sys.executable, *command], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
      processes.append((process, name, port, log_path))
      args.append(arg)
    for process, name, port, log_path in processes:
      _wait_until_listening(process, port, name, log_path, timeout_s)
    yield args
  finally:
    for process, *_ in reversed(processes):
      _stop(process)


def data_pipeline(config, beam_pipeline_args: Optional[Sequence[str]] = None):
  """The data components alone (ExampleGen, StatisticsGen, SchemaGen, Transform of the new span)
  under `config`'s name, root and metadata: what the runner tests and benchmark compare."""
  # Imported here: TFX takes tens of seconds to import, and the CLI imports this module.
  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx
  from pipeline import definition
  from pipeline import metadata
  example_gen, statistics_gen = definition.ingestion_nodes(config)
  schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                        infer_feature_shape=True)
  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
      preprocessing_fn=definition.PREPROCESSING_FN)
  root = os.path.abspath(config.pipeline_root)
  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name, pipeline_root=root,
      components=[example_gen, statistics_gen, schema_gen, transform],
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata.connection_config(config),
      beam_pipeline_args=list(beam_pipeline_args if beam_pipeline_args is not None
                              else config.beam_pipeline_args))
