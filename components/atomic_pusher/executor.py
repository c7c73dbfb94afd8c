"""The AtomicPusher's executor: TFX's filesystem push made atomic, with retention.

TFX's Pusher copies the model straight into `<serving_dir>/<version>/`: a run killed mid-copy
leaves a partial version that TF Serving, which loads the highest number it finds, tries to
load. Here the push goes through filesystem.push: a hidden copy, synced, then one rename; a
leftover of a killed push is removed by the next; a model identical to the latest served version
is not pushed again (a rerun with nothing new pushes nothing); only the newest `keep_versions`
complete versions stay, the one TF Serving serves (the highest) always among them.
"""

import json
import os
import shutil
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components.atomic_pusher import filesystem

KEEP_VERSIONS_KEY = "keep_versions"
# On the pushed_model artifact when nothing was copied because the latest version is this model.
SKIPPED_REASON_PROPERTY = "push_skipped"


class Executor(tfx_pusher_executor.Executor):
  """TFX's Pusher executor (blessing checks, artifact properties) with an atomic filesystem push."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    model_dir = self.GetModelPath(input_dict)
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              destination)
    if destination.WhichOneof("destination") != "filesystem":
      raise NotImplementedError("AtomicPusher pushes to a filesystem destination only")
    serving_dir = destination.filesystem.base_directory
    if "://" in serving_dir:
      # A rename is atomic on a local (or mounted) filesystem only: elsewhere, TFX's own push.
      logging.warning("AtomicPusher: %s is not a local path; pushing with TFX's Pusher",
                      serving_dir)
      super().Do(input_dict, output_dict, exec_properties)
      return
    custom_config = json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
                               or "{}")
    keep_versions = int(custom_config.get(KEEP_VERSIONS_KEY, 3))

    version_dir, skipped = filesystem.push(model_dir, serving_dir, keep_versions)
    if version_dir is None:
      self._MarkNotPushed(model_push)
      model_push.set_string_custom_property(SKIPPED_REASON_PROPERTY, skipped)
      return
    # The pushed model archived in the artifact, as TFX's Pusher does.
    shutil.copytree(model_dir, model_push.uri, dirs_exist_ok=True)
    self._MarkPushed(model_push, pushed_destination=version_dir,
                     pushed_version=os.path.basename(version_dir))
