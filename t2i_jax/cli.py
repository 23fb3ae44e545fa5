"""What every absl entry point in experiments/ does around its one library call."""

import logging as std_logging
import sys
from collections.abc import Callable

from absl import logging


def run(fn: Callable[[], object], user_errors: tuple[type[BaseException], ...]) -> None:
  """Runs `fn` with INFO logs (Orbax's per-save narration muted) and prints `user_errors`
  (errors whose message says what to fix) as one line and exit status 1, without a traceback."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(
    lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname
  )
  try:
    fn()
  except user_errors as error:
    sys.exit(f"error: {error}")
