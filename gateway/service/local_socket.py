"""The Unix socket the operator commands reach the daemon through.

Access is the file's permissions: owner-only, or owner and one group. The mode is set between
bind() and listen(), so there is no moment in which another user could connect.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
from pathlib import Path

from gateway.errors import DxgateError

MAX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class Bound:
    """A listening Unix socket and the file it made (to remove it only if it is still ours)."""

    def __init__(self, path: Path, sock: socket.socket) -> None:
        self.path, self.sock, self._ino = path, sock, path.lstat().st_ino

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self._ino:
                self.path.unlink()


def listen(path: Path, *, group: str = "") -> Bound:
    """Bind and listen on `path` (mode 0600, or 0660 with `group`); a stale file left by a
    daemon that died is replaced, a live one is refused."""
    if len(os.fsencode(path)) > MAX_PATH:
        raise DxgateError(f"api.socket {path} is longer than {MAX_PATH} bytes; give a shorter path")
    gid = -1
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise DxgateError(f"api.socket_group {group!r} is not a group on this system") from None
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise DxgateError(f"api.socket {path} exists and is not a socket; refusing to replace it")
        if _answers(path):
            raise DxgateError(f"api.socket {path} is in use: another dxgate runs with this state directory")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        sock.bind(os.fspath(path))
        bound = True
        os.chmod(path, 0o660 if group else 0o600)
        if gid != -1:
            os.chown(path, -1, gid)
        sock.listen(64)
        return Bound(path, sock)
    except OSError as exc:
        sock.close()
        if bound:
            with contextlib.suppress(OSError):
                path.unlink()
        raise DxgateError(f"api.socket {path}: {exc.strerror or exc}") from None


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
