"""A throwaway PostgreSQL cluster for the test session: Debian's `postgresql` binaries, a
temporary data directory, a free port on 127.0.0.1, trust authentication, stopped at the end.

`scripts/test.sh` installs the package when `initdb` is missing. As root (CI) the cluster runs
as the `postgres` system user, since `initdb` refuses root. Each test gets its own database
(`PostgresCluster.new_database`), cloned from a template that already has the schema.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_ports

SUPERUSER = "pushjobs"


def postgres_bin(name: str) -> str:
    """The path of a PostgreSQL server program (`initdb`, `pg_ctl`)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise RuntimeError(
        f"PostgreSQL's {name} not found: run scripts/test.sh (it installs Debian's "
        "`postgresql` package) or apt-get install postgresql"
    )


class PostgresCluster:
    """One running cluster; `url(db)` names a database in it."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pushjobs-pg-"))
        self.data = self.base / "data"
        self.port = free_ports(1)[0]
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        self._run(
            postgres_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.restart()

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: clients are disconnected)."""
        if (self.data / "postmaster.pid").exists():
            self._run(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Start the (stopped) cluster: same data, same port."""
        log = str(self.base / "postgres.log")
        pg_ctl = postgres_bin("pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-l", log, "-w", "-t", "60", "start")

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test-owned fixed SQL

    def new_database(self, template: str | None = None) -> str:
        """Create an empty database (or a copy of `template`); returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        suffix = f" TEMPLATE {template}" if template else ""
        self.execute(f"CREATE DATABASE {name}{suffix}")
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresCluster]:
    """A cluster of its own for the `with` block (stopped and removed afterwards)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            cluster.remove()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster (started on first use)."""
    with running_postgres() as cluster:
        yield cluster
