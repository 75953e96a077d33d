"""Allows `python -m edgectl`."""

import sys

from edgectl.cli.main import main

sys.exit(main())
