"""`python -m usnst` runs the `usnst` command."""
import sys

from usnst.cli import main

sys.exit(main())
