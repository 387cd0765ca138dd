"""``python -m local up|down|run|status``: see local/stack.py."""

import sys

from local.stack import main

sys.exit(main())
