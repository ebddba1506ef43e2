"""The registry's small value checks: what a version's metadata may hold
before anything is written.

>>> _version_number("3"), _check_tags({"team": "risk"})
(3, {'team': 'risk'})
>>> _check_metrics({"accuracy": float("nan")})
Traceback (most recent call last):
...
driftline.registry.errors.RegistryError: metrics.accuracy: must be a finite number or null (got nan)
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from .errors import RegistryError

_MAX_TAG = 1024
_MAX_TEXT = 4096


def _looks_like_pickle(data: bytes) -> bool:
    # Protocol 2+ pickles (and joblib files, which are pickles) start with
    # PROTO (0x80) and its protocol number; skops files are zips ("PK").
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def _version_number(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if type(value) is not int or not 1 <= value <= 2**31 - 1:
        raise RegistryError(f"version {value!r} is invalid: expected a positive integer")
    return value


def _json(value: Any, what: str, lenient: bool = False) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, default=str if lenient else None)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"{what} cannot be stored as JSON: {error}") from None


def _check_metrics(metrics: Mapping[str, Any] | None, what: str = "metrics") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in dict(metrics or {}).items():
        if not isinstance(key, str) or not key:
            raise RegistryError(f"{what}: names must be non-empty strings (got {key!r})")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise RegistryError(f"{what}.{key}: must be a finite number or null (got {value!r})")
            value = float(value)
        out[key] = value
    return out


def _check_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in dict(tags or {}).items():
        if not isinstance(key, str) or not 0 < len(key) <= 256:
            raise RegistryError(f"tags: names must be 1-256 character strings (got {key!r})")
        if not isinstance(value, str) or len(value) > _MAX_TAG:
            raise RegistryError(f"tags.{key}: must be a string of at most {_MAX_TAG} characters (got {value!r})")
        out[key] = value
    return out


def _optional_text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise RegistryError(f"{what} must be a string of 1-{_MAX_TEXT} characters (got {value!r})")
    return value
