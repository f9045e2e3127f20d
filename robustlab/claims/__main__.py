"""``python -m robustlab.claims``: measure the claims into one file."""

from .registry import main

raise SystemExit(main())
