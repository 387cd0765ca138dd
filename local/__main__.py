"""``python -m local up|down|run|status``: see local/cli.py."""

import sys

from local.cli import main

sys.exit(main())
