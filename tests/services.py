"""Real Redis and PostgreSQL servers for the tests, on free ports, started and stopped here.

The classes need only the standard library, psycopg and redis-py, so a script can use
them too; the pytest fixtures at the bottom are what tests/conftest.py imports.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import glob
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import psycopg
import pytest
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.serving import WSGIRequestHandler, make_server

INSTALL_HINT = (
    "run `make test` (it installs redis-server and postgresql) or scripts/install-system-deps.sh"
)
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class Closing:
    """`with server:` for the test servers: closed for good when the block ends."""

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """For good (a server that can restart after `stop` also cleans up here)."""
        self.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ServiceError(RuntimeError):
    """A test server could not be started or stopped."""


class MissingBinary(ServiceError):
    """A server program is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not installed: {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log was written)"
    return text[-limit:] or "(the log is empty)"


# --- cleanup, however the session ends -------------------------------------------------

# A helper process holds the other end of a pipe from the test session. When the session
# ends in any way (normally, by Ctrl-C, by SIGKILL or by a segfault in a C extension) the
# pipe reaches EOF, and the helper stops whatever servers are still registered. atexit
# alone would miss the last two, and a daemonized postmaster would outlive us.
_JANITOR_CODE = r"""
import json, os, shutil, signal, subprocess, sys

tasks = {}
for line in sys.stdin:
    msg = json.loads(line)
    if msg["op"] == "add":
        tasks[msg["key"]] = msg
    else:
        tasks.pop(msg["key"], None)
for task in tasks.values():
    pid = task.get("pid")
    if pid:
        try:
            # Only if the pid is still our server: its working directory is its own.
            if os.readlink(f"/proc/{pid}/cwd") == task["cwd"]:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if task.get("argv"):
        try:
            subprocess.run(task["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
    if task.get("rmtree"):
        shutil.rmtree(task["rmtree"], ignore_errors=True)
"""


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server that leads its own process group (start_new_session), and its children."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        pass  # a client that timed out and left: expected when a test delays an answer


class WsgiThread:
    """A WSGI app served by werkzeug on a free 127.0.0.1 port, from a daemon thread."""

    def __init__(self, app: Callable[..., Any], name: str) -> None:
        last: OSError | None = None
        for _ in range(20):
            port = free_port()
            try:
                server = make_server(HOST, port, app, threaded=True, request_handler=_QuietHandler)
            except OSError as exc:  # taken between free_port() and bind()
                if exc.errno != errno.EADDRINUSE:
                    raise
                last = exc
                continue
            self.port = port
            self._server: Any = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"{name}-{port}",
                daemon=True,
            )
            self._thread.start()
            return
        raise ServiceError(f"could not bind a port on {HOST}: {last}")

    def stop(self) -> None:
        """Stop serving and close the socket; a second call does nothing."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self._thread.join(timeout=10)


class _Janitor:
    """Cleans up after the test session, started on first use."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None

    def add(self, key: str, **task: Any) -> None:
        """Register (or replace) what to undo for `key` if the session dies."""
        self._send({"op": "add", "key": key, **task})

    def discard(self, key: str) -> None:
        """Forget `key`: it was cleaned up in the ordinary way."""
        if self._proc is not None:
            self._send({"op": "discard", "key": key})

    def close(self) -> None:
        """Let the helper exit, after it cleans up whatever is still registered."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=90)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()

    def _send(self, msg: dict[str, Any]) -> None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _JANITOR_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                # Its own session: a Ctrl-C meant for pytest must not kill it first.
                start_new_session=True,
            )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(msg) + "\n")
        self._proc.stdin.flush()


_janitor = _Janitor()
_live: dict[int, Closing] = {}
_owner_pid = os.getpid()


@atexit.register
def _stop_all() -> None:
    # A forked child that exits normally must not stop its parent's servers.
    if os.getpid() != _owner_pid:
        return
    for server in list(_live.values()):
        try:
            server.close()
        except Exception as exc:
            print(f"tests/services.py: could not stop {server!r}: {exc}", file=sys.stderr)
    _janitor.close()


# --- servers run as a child process, in a directory of their own ----------------------------


class ChildServer(Closing):
    """A test server run as a child process (SimpleSAMLphp under `php -S`, oidc-provider
    under Node): started on a free port, again on another if a process took that one
    first, stopped with its whole process group, cleaned up by the janitor if the test
    session dies. `stop()` ends it for good and removes its directory.

    A subclass sets `dir`, `log_path` and `_key` and calls `_begin()` in its constructor,
    and supplies `_write_config`, `_command` and `_not_ready`.
    """

    name = "the server"
    port_taken = "Address already in use"
    """What the server logs when its port was taken between free_port() and listening."""

    dir: Path
    log_path: Path
    _key: str
    port = 0
    startup_seconds: float | None = None
    _proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        """Write what the server reads at start (it knows its port by then)."""

    def _command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment to start the server with."""
        raise NotImplementedError

    def _not_ready(self) -> str | None:
        """None once the server answers as it should; else what it answered."""
        raise NotImplementedError

    def _begin(self) -> None:
        _live[id(self)] = self
        _janitor.add(self._key, rmtree=str(self.dir))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, limit: int = 4000) -> str:
        """The end of the server's log."""
        return _log_tail(self.log_path, limit)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        _janitor.discard(self._key)
        _live.pop(id(self), None)

    def _start(self) -> None:
        began = time.monotonic()
        last_error: ServiceError | None = None
        for _attempt in range(3):
            self.port = free_port()
            self._write_config()
            try:
                self._spawn()
                self.startup_seconds = time.monotonic() - began
                return
            except ServiceError as exc:
                # Another process may have taken the port between free_port() and listen().
                last_error = exc
                if self.port_taken not in self.log_tail():
                    raise
        assert last_error is not None
        raise last_error

    def _spawn(self) -> None:
        argv, env = self._command()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # The janitor recognizes the server by its working directory.
                cwd=self.dir,
                env=env,
                # Its own session: a Ctrl-C meant for pytest must not kill it first.
                start_new_session=True,
            )
        _janitor.add(self._key, pid=self._proc.pid, cwd=str(self.dir), rmtree=str(self.dir))
        try:
            self._wait_until_ready()
        except BaseException:
            proc, self._proc = self._proc, None
            stop_process_group(proc)
            raise

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self._proc.poll()
            if code is not None:
                raise ServiceError(
                    f"{self.name} exited with status {code} before answering on port "
                    f"{self.port}; its log:\n{self.log_tail()}"
                )
            last = self._not_ready()
            if last is None:
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{self.name} did not answer on port {self.port} within "
                    f"{START_TIMEOUT:.0f} s ({last}); its log:\n{self.log_tail()}"
                )
            time.sleep(0.05)


# --- Redis ---------------------------------------------------------------------------


class RedisServer(Closing):
    """A private redis-server on a free 127.0.0.1 port, without persistence.

    Creating one starts it. `stop()` and `start()` take it down and bring it back on the
    same port, so tests can simulate an outage; `close()` ends it for good.
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise MissingBinary("redis-server")
        self.binary = binary
        self.host = HOST
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sso-bridge-redis-")).resolve()
        self.log_path = self.dir / "redis.log"
        self._key = f"redis:{self.dir}"
        self._proc: subprocess.Popen[bytes] | None = None
        _live[id(self)] = self
        _janitor.add(self._key, rmtree=str(self.dir))
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} running={self.running}>"

    @property
    def url(self) -> str:
        """The URL to configure the bridge with (database 0)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def client(self, **options: Any) -> redis.Redis:
        """A new redis-py client for this server; by default it fails at once when it is down.

        (redis-py's default would retry with backoff for seconds, slowing outage tests.)
        """
        options = {"socket_timeout": 5, "retry": Retry(NoBackoff(), 0), **options}
        return redis.Redis(host=self.host, port=self.port, db=0, **options)

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.running:
            return
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--protected-mode", "yes",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        # redis-server runs in self.dir (--dir), which is how the janitor recognizes it.
        _janitor.add(self._key, pid=self._proc.pid, cwd=str(self.dir), rmtree=str(self.dir))
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server, keeping its port and directory for `start()`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM: an orderly shutdown. With --save "" nothing is written to disk.
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _janitor.add(self._key, rmtree=str(self.dir))

    def flush(self) -> None:
        """Delete every key in every database."""
        with self.client() as client:
            client.flushall()

    def close(self) -> None:
        """Stop the server for good and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        _janitor.discard(self._key)
        _live.pop(id(self), None)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise ServiceError(
                        f"redis-server exited with status {code} before answering PING "
                        f"on port {self.port}; its log:\n{_log_tail(self.log_path)}"
                    )
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"redis-server did not answer PING on port {self.port} within "
                        f"{START_TIMEOUT:.0f} s; its log:\n{_log_tail(self.log_path)}"
                    )
                time.sleep(0.05)
        finally:
            client.close()


# --- PostgreSQL ----------------------------------------------------------------------


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def find_postgres_bindir() -> Path:
    """The bin directory of the newest PostgreSQL server installed from Debian's packages."""
    found = [
        Path(initdb).parent
        for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if Path(initdb).with_name("pg_ctl").is_file()
    ]
    if not found:
        raise MissingBinary("PostgreSQL (initdb and pg_ctl)")
    return max(found, key=lambda bindir: _version_key(bindir.parent.name))


_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresServer(Closing):
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port, with fsync off.

    Creating one runs initdb and starts the server; `stop()` ends it and removes the
    cluster. Authentication is `trust` for the `postgres` user: tests only.
    """

    def __init__(self) -> None:
        bindir = find_postgres_bindir()
        self.initdb = bindir / "initdb"
        self.pg_ctl = bindir / "pg_ctl"
        self.host = HOST
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sso-bridge-pg-")).resolve()
        self.data_dir = self.dir / "data"
        self.socket_dir = self.dir / "sock"
        self.log_path = self.dir / "postgres.log"
        self.startup_seconds: float | None = None
        self._key = f"postgres:{self.dir}"
        self._as_postgres: list[str] = []
        _live[id(self)] = self
        _janitor.add(self._key, rmtree=str(self.dir))
        try:
            self._prepare_dir()
            began = time.monotonic()
            self._initdb()
            self._start()
            self.startup_seconds = time.monotonic() - began
        except BaseException:
            self.stop()
            raise

    def __repr__(self) -> str:
        return f"<PostgresServer {self.host}:{self.port} {self.dir}>"

    def dsn(self, name: str = "postgres") -> str:
        """A libpq URL for database `name`, for psycopg.connect()."""
        return f"postgresql://postgres@{self.host}:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create database `name` and return its SQLAlchemy URL."""
        if not _DB_NAME.fullmatch(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        """Stop the server at once (no checkpoint: the data is thrown away) and remove it."""
        _live.pop(id(self), None)
        if (self.data_dir / "postmaster.pid").exists():
            postmaster = self._postmaster_pid()
            result = self._run(
                [str(self.pg_ctl), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                timeout=STOP_TIMEOUT * 3,
            )
            if result.returncode != 0 and postmaster is not None:
                # pg_ctl could not do it; SIGQUIT is the same immediate shutdown.
                _signal_and_wait(postmaster, signal.SIGQUIT)
        shutil.rmtree(self.dir, ignore_errors=True)
        _janitor.discard(self._key)

    def _prepare_dir(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() != 0:
            return
        # PostgreSQL refuses to run as root: hand the cluster to the `postgres` user,
        # which Debian's postgresql package creates.
        if shutil.which("runuser") is None:
            raise MissingBinary("runuser (util-linux)")
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise MissingBinary("the `postgres` user (from the postgresql package)") from None
        for path in (self.dir, self.socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
        self._as_postgres = ["runuser", "-u", "postgres", "--"]

    def _initdb(self) -> None:
        result = self._run(
            [
                str(self.initdb),
                "-D", str(self.data_dir),
                "-A", "trust",
                "-U", "postgres",
                "--no-sync",
                # UTF-8 with the C locale: the same on every machine, and fast.
                "-E", "UTF8",
                "--no-locale",
            ],
            timeout=START_TIMEOUT * 4,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"initdb failed with status {result.returncode}:\n{result.stdout}")

    def _start(self) -> None:
        options = " ".join(
            [
                "-F -c fsync=off",
                f"-c listen_addresses={self.host}",
                f"-p {self.port}",
                # pg_ctl hands -o to a shell, hence the quoting.
                f"-k {shlex.quote(str(self.socket_dir))}",
            ]
        )
        self._janitor_stop_task()
        result = self._run(
            [
                str(self.pg_ctl),
                "-D", str(self.data_dir),
                "-l", str(self.log_path),
                "-w", "-t", str(int(START_TIMEOUT)),
                "-o", options,
                "start",
            ],
            timeout=START_TIMEOUT * 2,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(
                f"pg_ctl start failed with status {result.returncode} on port {self.port}:\n"
                f"{result.stdout}\nthe server's log:\n{_log_tail(self.log_path)}"
            )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        # pg_ctl -w has waited for the postmaster; this proves TCP on our port works.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"PostgreSQL on port {self.port} does not accept connections: {exc}\n"
                        f"its log:\n{_log_tail(self.log_path)}"
                    ) from exc
                time.sleep(0.05)

    def _janitor_stop_task(self) -> None:
        stop = [str(self.pg_ctl), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"]
        _janitor.add(self._key, argv=[*self._as_postgres, *stop], rmtree=str(self.dir))

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first_line)
        except (OSError, ValueError):
            return None

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_postgres, *argv],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            # Its own session, so that a Ctrl-C meant for pytest does not reach the
            # postmaster that pg_ctl leaves running.
            start_new_session=True,
        )


def _signal_and_wait(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- pytest fixtures -----------------------------------------------------------------

_Server = TypeVar("_Server", RedisServer, PostgresServer)


def _start_or_fail(factory: Callable[[], _Server]) -> _Server:
    try:
        return factory()
    except MissingBinary as exc:
        missing = str(exc)
    # Fail, never skip: a skipped Redis or PostgreSQL test would hide a missing check.
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for the whole session; a test that stops it must start it again."""
    server = _start_or_fail(RedisServer)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session; tests create their own databases."""
    server = _start_or_fail(PostgresServer)
    try:
        yield server
    finally:
        server.stop()
