"""Failed logins slow further tries, per account and per address; nothing locks.

Pure, with the monotonic time passed in. Each account and each client
address has a count of recent failures (forgotten ``window_s`` after the last
one). Past a number of free failures every further try waits, doubling from
1 s up to a cap:

- per **account**: 5 free, capped at 30 s. An attacker guessing one nurse's
  password from many addresses gets one guess per 30 s; the nurse, at worst,
  waits 30 s: an account is never locked (an attacker must not be able to
  lock a nurse out). A successful login clears the account's count.
- per **address**: 10 free, capped at 300 s (one address trying many
  accounts). A success does not clear it (a valid account would otherwise
  reset an attacker's address).

While a wait runs, a login is refused without checking the password, with
the same answer whether the account exists or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Limit", "LoginThrottle"]


@dataclass(frozen=True, slots=True)
class Limit:
    free: int
    cap_s: float

    def wait_s(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(2 ** (failures - self.free), self.cap_s))


@dataclass(slots=True)
class _Count:
    failures: int = 0
    last_mono: float = 0.0


@dataclass
class LoginThrottle:
    account: Limit = field(default_factory=lambda: Limit(free=5, cap_s=30.0))
    address: Limit = field(default_factory=lambda: Limit(free=10, cap_s=300.0))
    window_s: float = 900.0
    max_entries: int = 100_000
    _accounts: dict[str, _Count] = field(default_factory=dict)
    _addresses: dict[str, _Count] = field(default_factory=dict)

    def _get(self, table: dict[str, _Count], key: str, now: float) -> _Count:
        c = table.get(key)
        if c is not None and now - c.last_mono > self.window_s:
            del table[key]
            c = None
        return c or _Count()

    def wait_s(self, account: str, address: str, now: float) -> float:
        """Seconds before a login for ``account`` from ``address`` is tried (0: now)."""
        waits = []
        for table, limit, key in (
            (self._accounts, self.account, account.lower()),
            (self._addresses, self.address, address),
        ):
            c = self._get(table, key, now)
            if c.failures:
                waits.append(c.last_mono + limit.wait_s(c.failures) - now)
        return max([0.0, *waits])

    def failed(self, account: str, address: str, now: float) -> None:
        for table, key in ((self._accounts, account.lower()), (self._addresses, address)):
            c = self._get(table, key, now)
            c.failures += 1
            c.last_mono = now
            table[key] = c
            if len(table) > self.max_entries:
                self._prune(table, now)

    def succeeded(self, account: str) -> None:
        self._accounts.pop(account.lower(), None)

    def _prune(self, table: dict[str, _Count], now: float) -> None:
        for key in [k for k, c in table.items() if now - c.last_mono > self.window_s]:
            del table[key]
        while len(table) > self.max_entries:  # still full: forget the oldest
            del table[min(table, key=lambda k: table[k].last_mono)]
