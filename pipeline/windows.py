"""The rolling training window: the latest version of each of the last K spans of Examples.

TFX's canned resolver function `rolling_range` (ops LatestSpan + SkipIfLessThanNSpans) picks the
artifacts of the K largest spans and, with keep_all_versions=False, keeps one per span: the
largest `version`, ties (this project's spans have no version level) broken by the newest
artifact, so a span read again after its files changed replaces its older Examples.

It must see the Examples of earlier runs. An upstream node's output channel, as a consumer gets it
from `example_gen.outputs["examples"]`, resolves only this pipeline run's artifacts in a
synchronous pipeline, so the window reads a plain `Channel` of every Examples that node has
produced. Such a channel adds no dependency: the consumer must run after ExampleGen (add
`consumer.add_upstream_node(example_gen)` unless it already depends on it through another input).
"""

from tfx.dsl.input_resolution import canned_resolver_functions
from tfx.types import channel as channel_types
from tfx.types import resolved_channel


def training_window_resolver(examples: channel_types.BaseChannel,
                             window_spans: int) -> resolved_channel.ResolvedChannel:
  """Returns a channel of the latest version of each of the last `window_spans` spans.

  Args:
    examples: ExampleGen's output channel (`example_gen.outputs["examples"]`), or any channel
      naming the producer and output key of span-stamped Examples.
    window_spans: K >= 1; while fewer spans exist, the window holds all of them.

  Returns:
    A channel for a consumer's `examples` input (Transform, Trainer, ...), spans in ascending
    order; it resolves at the consumer's launch, so it is no node of the pipeline.
  """
  if isinstance(window_spans, bool) or not isinstance(window_spans, int) or window_spans < 1:
    raise ValueError(f"window_spans must be an int >= 1, got {window_spans!r}")
  producer = getattr(examples, "producer_component_id", None)
  output_key = getattr(examples, "output_key", None)
  if not producer or not output_key:
    raise ValueError("examples must name its producer and output key, as "
                     "example_gen.outputs['examples'] does")
  every_run = channel_types.Channel(type=examples.type, producer_component_id=producer,
                                    output_key=output_key)
  return canned_resolver_functions.rolling_range(
      every_run, num_spans=window_spans, min_spans=1, keep_all_versions=False)
