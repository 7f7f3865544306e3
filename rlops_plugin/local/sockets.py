"""Which TCP addresses a process listens on, read from /proc (Linux): for bind-address checks."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode(addr_hex: str, v6: bool) -> str:
    ip_hex, port_hex = addr_hex.split(":")
    raw = bytes.fromhex(ip_hex)
    if v6:
        words = struct.unpack("<4I", raw)
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    else:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    return f"{ip}:{int(port_hex, 16)}"


def listening_addresses(pids: list[int]) -> list[str]:
    """``ip:port`` of every listening TCP socket owned by any of ``pids``."""
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    found = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        path = Path(f"/proc/net/{name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                found.append(_decode(fields[1], v6))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out
