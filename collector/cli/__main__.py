"""`python -m collector.cli`: how `serve --workers N` starts its worker processes."""

import sys

from . import main

sys.exit(main())
