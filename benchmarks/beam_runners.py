"""The data components' wall time under each Beam preset (pipeline/beam.py).

  python -m benchmarks.beam_runners --work-dir runs/beam_runners [--max-train-examples N]

ExampleGen, StatisticsGen, SchemaGen and Transform (beam.data_pipeline) on MNIST's 60,000
training and 10,000 test images, run with LocalDagRunner once per preset in a fresh pipeline root:
in-memory, multi-process (one worker process per core) and portable (Beam's job server and an
EXTERNAL worker pool on this machine, started by beam.local_services). Reported per preset: the
run's wall time (services' start included) and each component's, from its ML Metadata execution.
On a machine with few cores this measures each runner's overhead (worker start-up, shipping
records between processes), not a speed-up: the speed-up needs workers on more cores or hosts.
Writes benchmarks/results/beam_runners.json.
"""

import dataclasses
import os
import shutil
import sys
import time
from typing import Any, Dict

from benchmarks import common
from benchmarks import machine
from core import config as config_lib
from pipeline import beam
from pipeline import metadata


def _component_seconds(config: config_lib.PipelineConfig) -> Dict[str, float]:
  """{node id: seconds} from each execution's creation and last update in ML Metadata."""
  store = metadata.open_store(config, readonly=True)
  seconds = {}
  for context in store.get_contexts_by_type("node"):
    node = context.name.split(".", 1)[1]
    for execution in store.get_executions_by_context(context.id):
      seconds[node] = (execution.last_update_time_since_epoch
                       - execution.create_time_since_epoch) / 1000.0
  return seconds


def run_preset(config: config_lib.PipelineConfig, preset: str, work_dir: str) -> Dict[str, Any]:
  """One run of the data components under `preset`, in <work_dir>/<preset>/."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top  (slow to import)
  root = os.path.join(work_dir, preset)
  shutil.rmtree(root, ignore_errors=True)
  config = dataclasses.replace(config, pipeline_root=os.path.join(root, "pipeline_root"),
                               metadata_path=None, enable_cache=False)
  args = beam.preset_args(preset, config.beam_pipeline_args)
  ticks = machine.cpu_ticks()
  started = time.time()
  with beam.local_services(args, os.path.join(root, "services")) as completed:
    tfx.orchestration.LocalDagRunner().run(beam.data_pipeline(config, completed))
  wall = time.time() - started
  return {"beam_pipeline_args": list(args), "wall_seconds": round(wall, 1),
          "component_seconds": {node: round(s, 1)
                                for node, s in sorted(_component_seconds(config).items())},
          "cpu_steal_share": machine.steal_share([(ticks, machine.cpu_ticks())])}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = common.argument_parser(__doc__)
  parser.add_argument("--work-dir", required=True, help="a scratch folder for the runs")
  parser.add_argument("--presets", default=",".join(beam.PRESETS),
                      help=f"comma-separated, of {', '.join(beam.PRESETS)} (default: all)")
  parser.add_argument("--max-train-examples", type=int, default=None,
                      help="fewer training images (default: all 60,000)")
  common.add_results_dir(parser)
  args = parser.parse_args(argv)
  config = config_lib.profile("cpu")
  config = dataclasses.replace(config, data=dataclasses.replace(
      config.data, max_train_examples=args.max_train_examples))
  runs = {}
  for preset in args.presets.split(","):
    runs[preset] = run_preset(config, preset, os.path.abspath(args.work_dir))
    print(f"{preset}: {runs[preset]['wall_seconds']:.0f} s {runs[preset]['component_seconds']}",
          flush=True)
  result = {**common.provenance("beam_runners", argv),
            "train_examples": args.max_train_examples or "all (60,000)",
            "eval_examples": "all (10,000)",
            "cpu_count": os.cpu_count(),
            "note": ("On this machine's few cores the presets measure overhead (worker start-up "
                     "per Beam pipeline, records crossing process boundaries), not speed-up."),
            "runs": runs}
  path = common.write_json(result, args.results_dir, "beam_runners.json")
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
