"""The command lines' exit codes and error reporting: one line naming the cause on stderr, the
traceback only with --verbose.

Exit codes (pipeline.run and pipeline.retrain):
  0  the run finished (retrain: pushed, or --ingest-only read the span)
  1  the run failed in a component; the line names the error
  2  bad command line or configuration (unknown flag, profile or config key, a refused value)
  3  retrain: nothing new (every component cached, or the served model is this one)
  4  retrain: the model was not blessed; the served version stays
  5  another run holds the pipeline root's lock; nothing ran
  6  bad input: the data, the pipeline root or the serving dir cannot be used; nothing ran
"""

import sys
import traceback

OK = 0
FAILED = 1
USAGE = 2
NOTHING_NEW = 3
NOT_BLESSED = 4
LOCKED = 5
BAD_INPUT = 6

VERBOSE_HINT = "run with --verbose for the traceback"


def one_line(error: BaseException) -> str:
  """`error` as one line: its type and the last non-empty line of its message (where Python and
  TFX put the cause)."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def report(prog: str, message: str, error: BaseException = None, verbose: bool = False) -> None:
  """Prints `prog: error: message` on stderr (and the traceback of `error` when `verbose`)."""
  if verbose and error is not None:
    traceback.print_exception(error, file=sys.stderr)
  print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
