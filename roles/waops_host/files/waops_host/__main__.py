"""`python3 -m waops_host ARGS`: the same as the `waops-host` launcher."""

import sys

from waops_host.cli import run

sys.exit(run())
