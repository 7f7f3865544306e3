"""Content hashes: SHA-256 over files and over canonical JSON.

Canonical JSON (sorted keys, no whitespace, no NaN) makes a spec's hash independent of how
it was written, so two equal specs always hash the same.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from rlops_plugin.errors import ConfigError

_CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` to canonical JSON bytes; NaN and infinity are refused."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except ValueError as exc:
        raise ConfigError(f"value cannot be hashed as JSON: {exc}") from exc


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj``."""
    return sha256_bytes(canonical_json(obj))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_finite_json(obj: Any, where: str) -> None:
    """Raise ``ConfigError`` naming the field if ``obj`` holds NaN or infinity."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{where}: {obj!r} is not a finite number")
    if isinstance(obj, dict):
        for key, value in obj.items():
            check_finite_json(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_finite_json(value, f"{where}[{i}]")
