"""What every absl launcher here shares: `--help` is an answer, not an error.

absl's own --help exits with status 1, so a script or a new user asking for help reads a
failure; `flags_parser` prints the same usage and exits 0.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

HELP = ("-h", "--help", "-help", "--helpshort", "-?")
HELP_FULL = ("--helpfull", "-helpfull")


def exit_on_help(argv: list[str]) -> None:
  """Prints the launcher's usage to stdout and exits 0 if argv asks for help."""
  asked = set(argv[1:])
  if asked & set(HELP + HELP_FULL):
    app.usage(shorthelp=not asked & set(HELP_FULL), writeto_stdout=True, exitcode=0)
    sys.exit(0)  # app.usage exits already; this keeps the promise if it ever stops doing so.


def flags_parser(argv: list[str]) -> list[str]:
  """app.run's flags_parser: help exits 0, everything else parses as absl does."""
  exit_on_help(argv)
  return flags.FLAGS(argv)
