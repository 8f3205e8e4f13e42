"""Config values that hold a JSON object of a module's fields (an imported model's geometry)."""

from __future__ import annotations

import json
from typing import Any, Iterable

from diffcorrupt.errors import ConfigError


def json_object(spec: str, key: str, fields: Iterable[str], example: str) -> dict[str, Any]:
    """The object that config ``key`` holds, or a ``ConfigError`` naming what is wrong: not JSON, not an
    object, or a name outside ``fields``; ``example`` shows the expected form."""
    try:
        value = json.loads(spec)
    except ValueError as error:
        raise ConfigError(f"config key '{key}' is not valid JSON ({error}); give an object such as {example}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' is JSON but not an object; give one such as {example}")
    fields = list(fields)
    for name in value:
        if name not in fields:
            raise ConfigError(f"config key '{key}' sets '{name}', which is not a field it may set; use some of "
                              f"{', '.join(fields)}")
    return value
