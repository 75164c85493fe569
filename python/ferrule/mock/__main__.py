"""``python -m ferrule.mock``: serve the simulated Anthropic upstream."""

import sys

from .cli import main

sys.exit(main())
