"""The IFSF profiles' names, in one place light enough for the registry and the CLI's parser
to import at every start (profiles.py itself imports the node layer, ~20-40 ms here).
profiles.py refuses to load if its profiles are not these."""

from __future__ import annotations

from typing import Final

PROFILE_NAMES: Final = ("generic", "petrochina", "sinopec")
