"""Users of the console and API, with roles, argon2 password hashes and lock-out.

Kept in the state database (table `users`, owner-only file). Roles are ordered: an admin may
do everything an engineer may, an engineer everything a technologist may. Five wrong
passwords in a row lock a user for a while; the count and the lock survive a restart.
Passwords and hashes never reach a log line.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.durable import open_state_db
from gateway.errors import DxgateError

LOGGER = logging.getLogger(__name__)

ROLES = ("technologist", "engineer", "admin")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class AuthError(DxgateError):
    """Wrong user or password, a disabled user, or a refused change."""


class LockedOut(AuthError):
    """Too many wrong passwords in a row: the user is locked for a while."""


def role_allows(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool = False


class UserStore:
    def __init__(self, database: Path, *, lockout_attempts: int = 5, lockout_s: float = 900.0,
                 min_password_length: int = 10, clock: Callable[[], float] = time.time,
                 busy_timeout_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._hasher = PasswordHasher()
        self._dummy = self._hasher.hash("dxgate-no-such-user")  # equal work for unknown names
        self.lockout_attempts, self.lockout_s, self.min_password_length = lockout_attempts, lockout_s, \
            min_password_length
        self._clock = clock
        self._db = open_state_db(database, busy_timeout_s)
        with self._write():
            self._db.execute("create table if not exists users (name text primary key, role text not null, "
                             "hash text not null, disabled integer not null default 0, failures integer not null "
                             "default 0, locked_until real not null default 0, updated_at real not null)")

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _check_password(self, password: str) -> None:
        if len(password) < self.min_password_length:
            raise AuthError(f"a password needs at least {self.min_password_length} characters")

    def add(self, name: str, role: str, password: str) -> User:
        if not _NAME.match(name):
            raise AuthError("a user name is 1-64 letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise AuthError(f"role must be one of {', '.join(ROLES)}")
        self._check_password(password)
        try:
            with self._write():
                self._db.execute("insert into users (name, role, hash, updated_at) values (?, ?, ?, ?)",
                                 (name, role, self._hasher.hash(password), self._clock()))
        except sqlite3.IntegrityError:
            raise AuthError(f"user {name} exists already") from None
        LOGGER.info("user %s added with role %s", name, role)
        return User(name, role)

    def set_password(self, name: str, password: str) -> None:
        self._check_password(password)
        with self._write():
            if self._db.execute("update users set hash = ?, failures = 0, locked_until = 0, updated_at = ? "
                                "where name = ?", (self._hasher.hash(password), self._clock(), name)).rowcount != 1:
                raise AuthError(f"no user {name}")
        LOGGER.info("password of user %s changed", name)

    def set_disabled(self, name: str, disabled: bool) -> None:
        with self._write():
            if self._db.execute("update users set disabled = ?, updated_at = ? where name = ?",
                                (int(disabled), self._clock(), name)).rowcount != 1:
                raise AuthError(f"no user {name}")
        LOGGER.info("user %s %s", name, "disabled" if disabled else "enabled")

    def list(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("select name, role, disabled from users order by name").fetchall()
        return [User(n, r, bool(d)) for n, r, d in rows]

    def verify(self, name: str, password: str) -> User:
        """The user, if the password is right; AuthError (the same for an unknown user) or LockedOut."""
        with self._lock:
            row = self._db.execute("select role, hash, disabled, failures, locked_until from users where name = ?",
                                   (name,)).fetchone()
        now = self._clock()
        if row is None:
            _verify(self._hasher, self._dummy, password)
            raise AuthError("wrong user name or password")
        role, stored, disabled, failures, locked_until = row
        if locked_until > now:
            raise LockedOut(f"user {name} is locked after {self.lockout_attempts} wrong passwords; try again in "
                            f"{int(locked_until - now) + 1} s or ask an administrator")
        if not _verify(self._hasher, stored, password):
            failures += 1
            lock = now + self.lockout_s if failures >= self.lockout_attempts else 0.0
            with self._write():
                self._db.execute("update users set failures = ?, locked_until = ? where name = ?",
                                 (0 if lock else failures, lock, name))
            if lock:
                LOGGER.warning("user %s locked after %d wrong passwords", name, failures)
                raise LockedOut(f"user {name} is locked after {self.lockout_attempts} wrong passwords")
            raise AuthError("wrong user name or password")
        if disabled:
            raise AuthError(f"user {name} is disabled")
        with self._write():
            self._db.execute("update users set failures = 0, locked_until = 0 where name = ?", (name,))
            if self._hasher.check_needs_rehash(stored):
                self._db.execute("update users set hash = ? where name = ?", (self._hasher.hash(password), name))
        return User(name, role)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _verify(hasher: PasswordHasher, stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
