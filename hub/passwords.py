"""Password hashes: argon2id (argon2-cffi), the one module that imports it.

Hashes are PHC strings (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``) with
argon2-cffi's defaults (RFC 9106's low-memory profile: 64 MiB, 3 passes,
4 lanes); a stored hash made with older parameters verifies and is reported
as needing a rehash, so parameters can rise without a migration.

Passwords are read without echo (``getpass``) or, for scripts and tests,
one per line from a file descriptor (``--password-fd``); never from the
command line, where ``ps`` and shell history would keep them.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "PasswordError",
    "PasswordSource",
    "hash_password",
    "needs_rehash",
    "password_problem",
    "verify_password",
]

MIN_PASSWORD_CHARS: Final = 12
MAX_PASSWORD_CHARS: Final = 1024

_hasher = PasswordHasher()


class PasswordError(ValueError):
    """A password could not be read, or is not acceptable (one line, why)."""


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password has at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"a password has at most {MAX_PASSWORD_CHARS} characters"
    if password != password.strip() or "\n" in password:
        return "a password does not start or end with white space"
    return None


def hash_password(password: str) -> str:
    problem = password_problem(password)
    if problem is not None:
        raise PasswordError(problem)
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True if ``password`` matches; False on a mismatch or an unusable stored hash."""
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


class PasswordSource:
    """Where passwords come from: the terminal without echo, or lines on a descriptor.

    ``fd``: read one password per line, in the order the prompts ask them (for
    scripts and tests: ``--password-fd 0`` with the passwords on stdin).
    """

    def __init__(
        self, fd: int | None = None, prompt: Callable[[str], str] = getpass.getpass
    ) -> None:
        self._fd = fd
        self._prompt = prompt
        self._lines: list[str] | None = None

    def _from_fd(self, label: str) -> str:
        if self._lines is None:
            assert self._fd is not None
            chunks = []
            while chunk := os.read(self._fd, 65536):
                chunks.append(chunk)
                if sum(len(c) for c in chunks) > 64 * MAX_PASSWORD_CHARS:
                    raise PasswordError(f"password descriptor {self._fd}: too much input")
            try:
                text = b"".join(chunks).decode("utf-8")
            except UnicodeDecodeError:
                raise PasswordError(f"password descriptor {self._fd}: not UTF-8") from None
            self._lines = text.splitlines()
        if not self._lines:
            raise PasswordError(f"password descriptor {self._fd}: no line for {label}")
        return self._lines.pop(0)

    def read(self, label: str) -> str:
        """One password (for a login)."""
        if self._fd is not None:
            return self._from_fd(label)
        try:
            return self._prompt(f"{label}: ")
        except (EOFError, KeyboardInterrupt):
            raise PasswordError(f"no password given for {label}") from None

    def new(self, label: str) -> str:
        """A new password: checked, and typed twice at a terminal."""
        first = self.read(label)
        problem = password_problem(first)
        if problem is not None:
            raise PasswordError(problem)
        if self._fd is None and self.read(f"{label} (again)") != first:
            raise PasswordError("the two passwords differ")
        return first
