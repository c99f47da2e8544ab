"""Finds the local secret of a Taskdeck server on this machine that runs as
this account, so its owner passes no token (the server keeps it in its data
directory and, while it runs, under the account's default data directory in
``servers/PORT``). Nothing is looked up for other hosts: a secret never
leaves the machine unasked.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import List, Optional


def default_data_dir() -> Optional[Path]:
    """The platform's data directory for Taskdeck, as the server finds it."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "taskdeck"
    if sys.platform.startswith("win"):
        appdata = os.environ.get("APPDATA")
        return Path(appdata) / "taskdeck" / "data" if appdata else None
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base / "taskdeck"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def discover(host: str, port: int) -> Optional[str]:
    """The secret of the server at ``host:port``, when it is on this machine
    and this account can read it; ``None`` otherwise."""
    if not is_loopback(host):
        return None
    default = default_data_dir()
    candidates: List[Path] = []
    if default is not None:
        candidates.append(default / "servers" / str(port))
    named = os.environ.get("TASKDECK_DATA_DIR")
    if named:
        candidates.append(Path(named) / "secret")
    if default is not None:
        candidates.append(default / "secret")
    for path in candidates:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if secret:
            return secret
    return None
