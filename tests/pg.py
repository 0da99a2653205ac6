"""A throwaway PostgreSQL cluster for tests: never the machine's own server.

``PgCluster`` runs Debian's ``initdb`` and ``pg_ctl`` (from
``/usr/lib/postgresql/<version>/bin``, the newest version present) on a new
temporary directory, listening on a unix socket in that directory only
(``listen_addresses = ''``: no TCP at all, so a server on 5432 is never
touched, and the port number only names the socket file). The server
binaries refuse to run as root, so as root (CI) they run as an unprivileged
user through ``runuser``: ``nobody`` if it exists, otherwise a system user
``cryod-pgtest`` created with ``useradd``. ``stop()`` shuts the cluster down
(immediate mode: it is thrown away) and deletes the directory.

Each test gets its own database (``create_database``/``drop_database``), so
tests never see each other's rows. With ``CI=true`` a missing PostgreSQL is a
failure, otherwise a skip (``require_postgres``), like every real component.

``python -m tests.pg`` starts one and prints its URL until interrupted (for
poking at the collector's schema by hand).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

__all__ = ["PgCluster", "find_pg_bin", "require_postgres"]

UNPRIVILEGED_USERS = ("nobody", "cryod-pgtest")


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding the server tools."""
    found = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        bin_dir = initdb.parent
        if (bin_dir / "pg_ctl").exists() and (bin_dir / "postgres").exists():
            version = tuple(int(x) for x in re.findall(r"\d+", bin_dir.parent.name))
            found.append((version, bin_dir))
    return max(found)[1] if found else None


def require_postgres() -> Path:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        msg = "PostgreSQL server binaries (/usr/lib/postgresql/*/bin: initdb, pg_ctl)"
        if IN_CI:
            pytest.fail(f"{msg} are required in CI (CI=true) but are not installed")
        pytest.skip(f"{msg} not installed (apt-get install postgresql)")
    return bin_dir


def _unprivileged_user() -> str:
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    name = UNPRIVILEGED_USERS[-1]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return name


def _socket_number() -> int:
    """A number for the socket file name (``.s.PGSQL.<n>``); any free port will do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="cryod-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "server.log"
        self.port = _socket_number()
        self.superuser = "postgres"
        self.user: str | None = None
        self._counter = 0
        if os.geteuid() == 0:
            self.user = _unprivileged_user()
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.base.chmod(0o700)

    # ---- processes --------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout_s: float = 120) -> None:
        argv = [str(self.bin_dir / tool), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stdout}{result.stderr}"
                f"{self.server_log()}"
            )

    def start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.superuser,
            "--auth=trust",  # the socket's directory is the cluster's own (0700)
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        options = " ".join(
            [
                f"-k {self.base}",
                f"-p {self.port}",
                "-c listen_addresses=''",
                # a throwaway cluster: durability is not what these tests measure
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=40",
            ]
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return "\n--- server log ---\n" + self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # ---- databases --------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) of a database, over the cluster's socket."""
        return (
            f"postgresql+psycopg://{self.superuser}@/{database}?host={self.base}&port={self.port}"
        )

    def _admin(self) -> object:
        import psycopg

        return psycopg.connect(
            host=str(self.base),
            port=self.port,
            user=self.superuser,
            dbname="postgres",
            autocommit=True,
        )

    def create_database(self) -> str:
        self._counter += 1
        name = f"t{os.getpid()}_{self._counter}"
        with self._admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_cluster(bin_dir: Path) -> Iterator[PgCluster]:
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql")
    with running_cluster(pg_bin) as c:
        print(c.url(c.create_database()), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
