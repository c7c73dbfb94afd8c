"""pipeline.progress: runner log lines become start / finish / cache-hit lines with timings."""

import io
import logging

from pipeline import progress


def _emit(handler, message):
  handler.emit(logging.LogRecord("absl", logging.INFO, __file__, 0, message, None, None))


def test_start_finish_and_cache_hits_are_reported():
  stream = io.StringIO()
  handler = progress.ProgressHandler(stream)
  _emit(handler, "Component Transform is running.")
  _emit(handler, "A cached execution 7 is used.")
  _emit(handler, "Component Transform is finished.")
  _emit(handler, "node Pusher is running.")  # BeamDagRunner's wording
  _emit(handler, "DiffusionEvaluator: sampling took 1.0 s")
  _emit(handler, "node Pusher is finished.")
  _emit(handler, "Some other TFX message.")
  lines = stream.getvalue().splitlines()
  assert [line.split("] ", 1)[1].split(" in ")[0] for line in lines] == [
      "Transform started", "Transform served from cache", "Pusher started",
      "DiffusionEvaluator: sampling took 1.0 s", "Pusher finished"]
  assert [(node, cached) for node, _, cached in handler.summary] == [
      ("Transform", True), ("Pusher", False)]
