"""Server-side login sessions: idle timeout, absolute lifetime, logout everywhere.

Pure, with the monotonic time passed in. The browser holds a random token
(256 bits) in an HttpOnly, SameSite=Strict cookie; the store keeps only its
SHA-256, the user's name and the session's CSRF token. A session ends after
``idle_s`` without a request that renews it (the live board's stream does
not renew it), after ``lifetime_s`` whatever happens, at logout, or when its
user logs out everywhere (or is disabled, or changes their password). A new
token is issued at every login (no session fixation). Sessions live in the
web process's memory: a restart logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

__all__ = ["LoginSession", "SessionStore", "new_token", "same_token"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class LoginSession:
    user: str
    csrf: str
    started_mono: float
    last_mono: float


@dataclass
class SessionStore:
    idle_s: float = 15 * 60.0
    lifetime_s: float = 12 * 3600.0
    _by_key: dict[str, LoginSession] = field(default_factory=dict)

    def start(self, user: str, now: float) -> tuple[str, LoginSession]:
        token = new_token()
        s = LoginSession(user=user, csrf=new_token(), started_mono=now, last_mono=now)
        self._by_key[_key(token)] = s
        return token, s

    def get(self, token: str | None, now: float, *, renew: bool = True) -> LoginSession | None:
        if not token:
            return None
        key = _key(token)
        s = self._by_key.get(key)
        if s is None:
            return None
        if now - s.last_mono > self.idle_s or now - s.started_mono > self.lifetime_s:
            del self._by_key[key]
            return None
        if renew:
            s.last_mono = now
        return s

    def end(self, token: str | None) -> None:
        if token:
            self._by_key.pop(_key(token), None)

    def end_all(self, user: str) -> int:
        """Logout everywhere: every session of ``user``; how many there were."""
        keys = [k for k, s in self._by_key.items() if s.user == user]
        for k in keys:
            del self._by_key[k]
        return len(keys)

    def count(self, user: str) -> int:
        return sum(1 for s in self._by_key.values() if s.user == user)
