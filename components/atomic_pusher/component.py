"""AtomicPusher: the standard Pusher component with the executor of this package.

Same inputs, outputs and blessing rules as `tfx.components.Pusher`; a filesystem push is atomic
and the serving dir keeps the last `keep_versions` versions (executor.py).
"""

from typing import Optional

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.atomic_pusher import executor


class AtomicPusher(tfx.components.Pusher):
  """Pushes a blessed model to `<serving_dir>/<version>/`, atomically; keeps `keep_versions`."""

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model, model_blessing, serving_dir: str, keep_versions: int,
               infra_blessing: Optional[tfx.dsl.Channel] = None):
    if keep_versions < 1:
      raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
    super().__init__(
        model=model, model_blessing=model_blessing, infra_blessing=infra_blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)),
        custom_config={executor.KEEP_VERSIONS_KEY: keep_versions})
