"""Runs the pipeline only up to one node (that node and everything it depends on), with
pipeline.run's flags: a pipeline process that tests can kill in a chosen component without
paying for the rest of the run.

  python -m tests.support.partial_pipeline Transform --profile smoke --pipeline-root R ...
"""

import sys

from pipeline import run as run_lib


def upstream_closure(node):
  """`node` and every node it depends on, directly or not, cut loose from the nodes left out."""
  seen, stack = {}, [node]
  while stack:
    current = stack.pop()
    if current.id not in seen:
      seen[current.id] = current
      stack.extend(current.upstream_nodes)
  for kept in seen.values():
    for downstream in list(kept.downstream_nodes):
      if downstream.id not in seen:
        kept.remove_downstream_node(downstream)
  return list(seen.values())


def main(argv) -> int:
  until, flags = argv[0], argv[1:]
  config = run_lib.config_from_args(run_lib.parse_args(flags))
  # pylint: disable=g-import-not-at-top
  from tfx import v1 as tfx
  from pipeline import definition
  full = definition.create_pipeline(config)
  target = next(node for node in full.components if node.id == until)
  run_lib.configure_logging(verbose=False)
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name=full.pipeline_info.pipeline_name,
      pipeline_root=full.pipeline_info.pipeline_root,
      components=upstream_closure(target), enable_cache=full.enable_cache,
      metadata_connection_config=full.metadata_connection_config,
      beam_pipeline_args=full.beam_pipeline_args))
  print("done", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
