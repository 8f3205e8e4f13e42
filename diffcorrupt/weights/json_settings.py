"""The settings files that come with downloaded weights (diffusers' config.json and its kin): read
as one JSON object, or refused in one sentence, since a damaged download is their usual fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffcorrupt.errors import UserError


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """The object in ``path``; ``fix`` ends the sentence when it is missing, not JSON or not an object."""
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise UserError(f"{path} is missing or not JSON ({ascii(str(error))[1:-1]}); {fix}") from None
    if not isinstance(settings, dict):
        raise UserError(f"{path} holds a JSON {type(settings).__name__}, not an object of model settings; {fix}")
    return settings
