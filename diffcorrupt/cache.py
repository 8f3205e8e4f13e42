"""Where computed artefacts that outlive a run are kept: converted weights, trained evaluation
classifiers and reference statistics. ``$DIFFCORRUPT_CACHE``, else ``~/.cache/diffcorrupt``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("DIFFCORRUPT_CACHE", Path.home() / ".cache" / "diffcorrupt"))
