"""Start a private `redis-server`: for the test suite and for the embedded default.

The binary is taken from PATH; on a machine without one, Debian's `redis-server`
package is installed with apt-get (the project's machines run as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

MAX_SOCKET_PATH = 100  # bytes; sockaddr_un holds 108 with the terminating NUL


class RedisUnavailableError(RuntimeError):
    """No redis-server could be found, installed or started."""


def find_redis_server(*, install: bool = True) -> str:
    """Path of a redis-server binary, installing Debian's package if allowed and needed."""
    found = shutil.which("redis-server")
    if found or not install:
        if not found:
            raise RedisUnavailableError("redis-server is not installed")
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RedisUnavailableError(
            "redis-server is not installed; install it (e.g. `apt-get install redis-server`)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "redis-server"],
    ):
        try:
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        except (OSError, subprocess.CalledProcessError) as error:
            raise RedisUnavailableError(
                f"redis-server is not installed and `{' '.join(command)}` failed ({error})"
            ) from None
    found = shutil.which("redis-server")
    if not found:
        raise RedisUnavailableError("apt-get installed redis-server but it is not on PATH")
    return found


def _stop_daemon(data_dir: Path) -> None:
    """Stop a daemonized server that started but did not answer (its pid file says)."""
    pid_file = data_dir / "redis.pid"
    with contextlib.suppress(OSError, ValueError):  # none started, or it has ended
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def _daemon_died(data_dir: Path) -> bool:
    """Whether the daemonized server named in the pid file has exited already."""
    try:
        os.kill(int((data_dir / "redis.pid").read_text().strip()), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False  # no pid file yet: it is still starting
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisProcess:
    """A redis-server child process listening on loopback and, where the path fits, on
    a Unix socket in its data directory."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    socket_path: Path | None = None

    @property
    def url(self) -> str:
        """The URL clients on this machine should use: the Unix socket if there is one
        (a round trip costs about a third of one over loopback TCP here)."""
        if self.socket_path is not None:
            return f"unix://{quote(str(self.socket_path))}?db=0"
        return self.tcp_url

    @property
    def tcp_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(
    data_dir: Path,
    *,
    port: int | None = None,
    append_only: bool = True,
    daemonize: bool = False,
    cluster: bool = False,
    replica_of: int | None = None,
    timeout: float = 10.0,
) -> RedisProcess:
    """Start redis-server with its files in `data_dir` and wait until it answers PING.

    With `daemonize`, the server detaches and outlives this process (pid in
    `data_dir/redis.pid`); with `replica_of`, it replicates the server on that port (and
    keeps no append-only file of its own).
    """
    binary = find_redis_server()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        # (not on a replica: writing its first append-only file after its sync, it
        # refuses SIGTERM, and `stop` waited 10 s, then killed it)
        "yes" if append_only and replica_of is None else "no",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--logfile",
        str(data_dir / "redis.log"),
        # A replica's first sync starts at once, not after Redis's default 5 s wait for
        # more replicas to share one snapshot (a primary here has at most one).
        "--repl-diskless-sync-delay",
        "0",
    ]
    socket_path: Path | None = (data_dir / "redis.sock").absolute()
    if len(str(socket_path).encode()) > MAX_SOCKET_PATH:
        socket_path = None  # too long for sockaddr_un: loopback TCP only
    else:
        args += ["--unixsocket", str(socket_path), "--unixsocketperm", "700"]
    if cluster:  # its node table lives in its data directory
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-port", str(free_port())]  # (port + 10000 may not exist)
    if replica_of is not None:  # a replica of the server on that loopback port
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    if daemonize:
        args += ["--daemonize", "yes", "--pidfile", str(data_dir / "redis.pid")]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisProcess(process, port, data_dir, socket_path)
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            client.close()
            return server
        except redis.ConnectionError:
            exited = process.poll()
            if daemonize:  # the launcher exits at once; the server must still be there
                failed = exited not in (None, 0) or (exited == 0 and _daemon_died(data_dir))
            else:
                failed = exited is not None
            if failed or time.monotonic() > deadline:
                server.stop()
                _stop_daemon(data_dir)
                log = data_dir / "redis.log"
                lines = log.read_text(errors="replace").split("\n") if log.exists() else []
                last = next((line.strip() for line in reversed(lines) if line.strip()), "")
                said = f": {last}" if last else ""
                raise RedisUnavailableError(
                    f"redis-server did not start on port {port}{said} (its log: {log})"
                ) from None
            time.sleep(0.02)  # polling a child process that is starting up


@dataclass
class RedisClusterProcess:
    """A Redis Cluster of child redis-servers on loopback, one master per node, no
    replicas (for tests and benchmarks: the semantics of slots, not availability)."""

    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        """A seed node's URL; cluster clients learn the others from it."""
        return self.nodes[0].tcp_url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(
    data_dir: Path, *, masters: int = 3, timeout: float = 30.0
) -> RedisClusterProcess:
    """Start `masters` cluster-enabled redis-servers, join them into one cluster with
    `redis-cli --cluster create`, and wait until every node says `cluster_state:ok`."""
    nodes: list[RedisProcess] = []
    try:
        for index in range(masters):
            nodes.append(start_redis(data_dir / f"node{index}", cluster=True))
        cli = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes)]
        created = subprocess.run(
            [*create, "--cluster-replicas", "0", "--cluster-yes"],
            check=False,
            capture_output=True,
            timeout=timeout,
        )
        if created.returncode != 0:
            said = (created.stdout + created.stderr).decode(errors="replace").strip()
            raise RedisUnavailableError(f"redis-cli --cluster create failed: {said[-400:]}")
        deadline = time.monotonic() + timeout
        for node in nodes:
            client = redis.Redis.from_url(node.tcp_url)
            # The nodes agree on the slot map by gossip, a moment after the create.
            while client.cluster("INFO").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise RedisUnavailableError("the Redis Cluster did not reach state ok")
                time.sleep(0.05)  # polling the gossip: there is no event to wait on
            client.close()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisClusterProcess(nodes)
