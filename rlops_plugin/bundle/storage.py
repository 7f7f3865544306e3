"""Safe reading of bundle files: path checks, hash checks, and format sniffing.

Every file is addressed by a manifest-relative name that is checked against traversal and
symlinks, and its SHA-256 is compared with the manifest before a byte of it is parsed.
Weights are read only as safetensors; a pickle or ``torch.save`` archive is refused by its
magic bytes, so nothing can execute while a model loads.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any, NoReturn

from rlops_plugin.bundle.hashing import sha256_file
from rlops_plugin.errors import IntegrityError, UnsafeArtifactError

_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_MAX_JSON_BYTES = 16 << 20
_MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors itself refuses larger headers


def check_name(name: str) -> list[str]:
    """Split a manifest file name into parts; refuse absolute, backslashed or traversing names."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        raise UnsafeArtifactError(f"{name!r}: file names must be relative POSIX paths")
    parts = name.split("/")
    if any(part in ("", ".", "..") or not _NAME_PART.match(part) for part in parts):
        raise UnsafeArtifactError(f"{name!r}: file name has an unsafe component (path traversal?)")
    return parts


def safe_path(root: Path, name: str) -> Path:
    """Resolve a manifest file name inside ``root``; refuse traversal, absolute paths, links."""
    parts = check_name(name)
    root_real = Path(os.path.realpath(root))
    path = root.joinpath(*parts)
    current = root
    for part in parts:
        current = current / part
        if current.is_symlink():
            raise UnsafeArtifactError(f"{name}: is a symbolic link; bundles contain plain files only")
    if not str(Path(os.path.realpath(path))).startswith(str(root_real) + os.sep):
        raise UnsafeArtifactError(f"{name}: resolves outside the bundle directory")
    return path


def verified_path(root: Path, name: str, expected_sha256: str) -> Path:
    """Return the path of ``name`` after its hash matched ``expected_sha256``."""
    path = safe_path(root, name)
    if not path.is_file():
        raise IntegrityError(f"{name}: listed in the manifest but missing from {root}")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise IntegrityError(
            f"{name}: sha256 {actual[:12]}... does not match the manifest's {expected_sha256[:12]}...; "
            "the file was modified after the bundle was saved"
        )
    return path


def read_json(path: Path, name: str) -> Any:
    """Parse a (size-limited) JSON file; NaN/Infinity literals are refused."""
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise UnsafeArtifactError(f"{name}: JSON file larger than {_MAX_JSON_BYTES} bytes")

    def _no_constants(token: str) -> Any:
        raise IntegrityError(f"{name}: JSON holds {token}, which rlops never writes")

    try:
        return json.loads(path.read_text("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{name}: not valid JSON ({exc})") from exc


def sniff_safetensors(path: Path, name: str) -> bytes:
    """Read a weights file after checking it is safetensors, not a pickle or zip archive.

    The safetensors structure (an 8-byte little-endian header length, then a JSON object) is checked
    first: its first byte is part of that length and can be anything, including bytes that also start
    pickles. Only a file that is *not* safetensors is then named for what it looks like.
    """
    data = path.read_bytes()
    if len(data) >= 10:
        (header_len,) = struct.unpack("<Q", data[:8])
        header = data[8:8 + header_len].rstrip(b" ")  # safetensors pads its JSON header with spaces
        if 2 <= header_len <= min(len(data) - 8, _MAX_SAFETENSORS_HEADER) and header[:1] == b"{" \
                and header[-1:] == b"}":
            _check_header(header, len(data) - 8 - header_len, name)
            return data
    _refuse_non_safetensors(data[:2], name)


def check_safetensors_header(path: Path, name: str) -> None:
    """Refuse a file that is not safetensors, reading only its header (checkpoints can be gigabytes).

    The same verdicts as :func:`sniff_safetensors`, for weights that a loader (transformers, peft) reads later.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) == 8 and size >= 10:
            (header_len,) = struct.unpack("<Q", head)
            if 2 <= header_len <= min(size - 8, _MAX_SAFETENSORS_HEADER):
                header = fh.read(header_len).rstrip(b" ")
                if header[:1] == b"{" and header[-1:] == b"}":
                    _check_header(header, size - 8 - header_len, name)
                    return
    _refuse_non_safetensors(head[:2], name)


def _check_header(header: bytes, data_size: int, name: str) -> None:
    """Refuse a safetensors header that is not a JSON object of tensors whose byte ranges fit the file.

    safetensors raises a bare ``SafetensorError`` for these; checking first names the file instead.
    """
    try:
        entries = json.loads(header)
    except (UnicodeDecodeError, ValueError):
        raise UnsafeArtifactError(f"{name}: malformed safetensors header (not JSON)") from None
    if not isinstance(entries, dict):
        raise UnsafeArtifactError(f"{name}: malformed safetensors header (not a JSON object)")
    for key, entry in entries.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and isinstance(shape, list)
                and all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(offsets, list)
                and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise UnsafeArtifactError(f"{name}: malformed safetensors header entry {key!r} "
                                      f"(dtype, shape and data_offsets within the file's {data_size} data bytes)")


def _refuse_non_safetensors(start: bytes, name: str) -> NoReturn:
    """Name what a file that is not safetensors looks like (from its first two bytes)."""
    if start[:2] == b"PK":
        kind = "a zip (torch.save) archive"
    elif start[:1] == b"\x80" or start[:1] in (b"(", b"c", b"]", b"}"):
        kind = "a pickle"
    else:
        raise UnsafeArtifactError(f"{name}: not a safetensors file (bad header)")
    raise UnsafeArtifactError(
        f"{name}: looks like {kind}, not safetensors; rlops never unpickles weights. "
        "Re-save the policy with rlops (safetensors)."
    )
