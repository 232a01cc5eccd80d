"""Find, or start, the real Redis and PostgreSQL servers the backend tests talk to.

The URL/DSN comes from ``ASYNCRON_REDIS_URL`` / ``ASYNCRON_POSTGRES_DSN`` (defaults:
the machine's own servers). Where none answers and the binary exists, a private
server is started on a free loopback port in a temp dir and stopped by its pid.
Where there is no server at all, the test is skipped on a laptop but fails in CI
(``CI=true``): CI must never pass by skipping the distributed tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


#: Every key and table prefix handed to a test this session (see fresh_prefix).
PREFIXES: set[str] = set()
#: The tables a PostgreSQL backend creates under its prefix.
PG_TABLES = ("claims", "tokens", "leaders", "runs")


def fresh_prefix(head: str, digits: int = 12) -> str:
    """A new key/table prefix ``head`` + random hex, remembered so that what the tests
    left under it on a shared server is deleted when the session ends."""
    prefix = f"{head}{uuid.uuid4().hex[:digits]}"
    PREFIXES.add(prefix)
    return prefix


def _forget_redis(url: str) -> None:
    """Delete the keys of this session's prefixes from a shared Redis (one SCAN)."""
    import redis

    with redis.Redis.from_url(url, socket_timeout=5) as client:
        mine = [
            key
            for key in client.scan_iter(count=1000)
            if key.split(b":", 1)[0].decode(errors="replace") in PREFIXES
        ]
        for i in range(0, len(mine), 1000):
            client.delete(*mine[i : i + 1000])


def _forget_postgres(dsn: str) -> None:
    """Drop the tables of this session's prefixes from a shared PostgreSQL."""
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            names = [
                r["tablename"]
                for r in rows
                if r["tablename"].rpartition("_")[0] in PREFIXES
                and r["tablename"].rpartition("_")[2] in PG_TABLES
            ]
            for name in names:
                await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        finally:
            await conn.close()

    asyncio.run(drop())


def in_ci() -> bool:
    """Whether this run is CI's, where a missing server is a failure."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str) -> None:
    """Skip (laptop) or fail (CI) a test whose server cannot be had."""
    message = f"{what} is not available"
    if in_ci():
        pytest.fail(f"{message}, and CI=true forbids skipping the distributed tests")
    pytest.skip(message)


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    """Return a free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


@dataclass
class PrivateServer:
    """A server this test run started; stopped by its pid."""

    url: str
    proc: subprocess.Popen[bytes]
    directory: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    @property
    def port(self) -> int:
        """The loopback port it listens on (a restart reuses it)."""
        port = urlparse(self.url).port
        assert port is not None
        return port

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL after 10 s); remove its dir."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_private_redis(port: int | None = None, directory: str | None = None) -> PrivateServer:
    """Start a private ``redis-server`` on a free loopback port (used by restart tests too)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    port = port or free_port()
    directory = directory or tempfile.mkdtemp(prefix="asyncron-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            directory,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_until(lambda: _answers("127.0.0.1", port), 10, "redis-server")
    return PrivateServer(f"redis://127.0.0.1:{port}/0", proc, directory)


def start_private_postgres() -> PrivateServer:
    """Start a private PostgreSQL cluster (initdb + pg_ctl) on a free loopback port."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("initdb/pg_ctl")
    directory = tempfile.mkdtemp(prefix="asyncron-pg-")
    data = os.path.join(directory, "data")
    user_args: list[str] = []
    preexec = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        import pwd

        nobody = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)

        def preexec() -> None:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)

    subprocess.run(
        [initdb, "-D", data, "-U", "postgres", "--auth=trust", *user_args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            os.path.join(os.path.dirname(os.path.realpath(pg_ctl)), "postgres"),
            "-D",
            data,
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            directory,
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec,
    )
    _wait_until(lambda: _answers("127.0.0.1", port), 30, "postgres")
    time.sleep(0.3)
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-c",
            "CREATE DATABASE test",
        ],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return PrivateServer(f"postgresql://postgres@127.0.0.1:{port}/test", proc, directory)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


@contextlib.contextmanager
def redis_service() -> Iterator[str | None]:
    """Yield a Redis URL that answers, starting a private server if needed; None if none."""
    url = os.environ.get("ASYNCRON_REDIS_URL", DEFAULT_REDIS_URL)
    if _answers(*_host_port(url, 6379)):
        try:
            yield url
        finally:
            with contextlib.suppress(Exception):  # leftovers are untidy, not wrong
                _forget_redis(url)
        return
    try:
        server = start_private_redis()
    except (FileNotFoundError, RuntimeError, OSError):
        yield None
        return
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_service() -> Iterator[str | None]:
    """Yield a PostgreSQL DSN that answers, starting a private cluster if needed; None if none."""
    dsn = os.environ.get("ASYNCRON_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    if _answers(*_host_port(dsn, 5432)):
        try:
            yield dsn
        finally:
            with contextlib.suppress(Exception):
                _forget_postgres(dsn)
        return
    try:
        server = start_private_postgres()
    except (FileNotFoundError, RuntimeError, OSError, subprocess.CalledProcessError):
        yield None
        return
    try:
        yield server.url
    finally:
        server.stop()
