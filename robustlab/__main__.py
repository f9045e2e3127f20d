"""``python -m robustlab``: the command line (see robustlab.cli)."""

import sys

from .cli import main

sys.exit(main())
