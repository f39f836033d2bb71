"""Real Redis high-availability topologies on free loopback ports.

A Sentinel setup (1 master, 1 replica, 3 sentinels) and a Redis Cluster
(3 masters + 3 replicas built by ``redis-cli --cluster create``), with short
failure-detection times so a failover takes a few seconds. Each is started
once per test module (the fixtures at the end) and torn down after it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.procs import HOST, Proc, free_port, redis_process, wait_until

SERVICE = "mymaster"
#: a sentinel calls the master down after this long without a reply
DOWN_AFTER_MS = 1000
#: a cluster node calls another failed after this long
CLUSTER_NODE_TIMEOUT_MS = 1500


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
    )


def ask(port: int, *command: Any) -> Any:
    """One command to one server; None if it does not answer."""
    try:
        with _client(port) as r:
            return r.execute_command(*command)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return None


def _info(port: int, section: str) -> dict[str, Any]:
    try:
        with _client(port) as r:
            return r.info(section)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return {}


def _redis_server(tmp: Path, name: str, *extra: str) -> Proc:
    base = redis_process(tmp / name)
    (tmp / name).mkdir(parents=True, exist_ok=True)
    # a replica's first sync would wait 5 s for more replicas to share it
    argv = [*base.argv, "--repl-diskless-sync-delay", "0", *extra]
    return Proc(argv, base.port, tmp / name, name)


class SentinelSetup:
    """1 master, 1 replica and 3 sentinels monitoring them as :data:`SERVICE`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.master = _redis_server(tmp, "master")
        self.replica = _redis_server(tmp, "replica", "--replicaof", HOST, str(self.master.port))
        # Each sentinel is told the others and the replica up front (instead of
        # learning them from hello messages every 2 s): the setup is healthy at once.
        self._ids = [secrets.token_hex(20) for _ in range(3)]
        self._ports = [free_port() for _ in range(3)]
        self.sentinels = [self._sentinel(i) for i in range(3)]

    def _sentinel(self, i: int) -> Proc:
        port = self._ports[i]
        workdir = self.tmp / f"sentinel{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        others = "".join(
            f"sentinel known-sentinel {SERVICE} {HOST} {p} {myid}\n"
            for j, (p, myid) in enumerate(zip(self._ports, self._ids, strict=True))
            if j != i
        )
        conf = workdir / "sentinel.conf"  # sentinel rewrites its own config file
        conf.write_text(
            f"port {port}\nbind {HOST}\nprotected-mode no\ndir {workdir}\n"
            f"sentinel myid {self._ids[i]}\n"
            f"sentinel monitor {SERVICE} {HOST} {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
            f"sentinel known-replica {SERVICE} {HOST} {self.replica.port}\n" + others
        )
        exe = shutil.which("redis-server")
        return Proc([exe, str(conf), "--sentinel"], port, workdir, f"sentinel{i}")

    @property
    def procs(self) -> list[Proc]:
        return [self.master, self.replica, *self.sentinels]

    def url(self, service: str = SERVICE, db: int = 0) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{db}/{service}"

    def master_port(self) -> int | None:
        """The master's port as the first answering sentinel reports it."""
        for s in self.sentinels:
            reply = ask(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            if reply:
                return int(reply[1])
        return None

    def healthy(self) -> bool:
        """Every sentinel knows the master, the replica and both other sentinels."""
        if _info(self.replica.port, "replication").get("master_link_status") != "up":
            return False
        for s in self.sentinels:
            state = ask(s.port, "SENTINEL", "MASTER", SERVICE)  # parsed into a dict
            if not state or int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    def start(self) -> SentinelSetup:
        for proc in self.procs:
            proc.start()
        wait_until(self.healthy, timeout=30, interval=0.1)
        return self

    def kill_master(self) -> Proc:
        """SIGKILL the current master; returns its process."""
        port = self.master_port()
        victim = next(p for p in (self.master, self.replica) if p.port == port)
        victim.kill()
        return victim

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until the sentinels name a new master that answers as one."""

        def promoted() -> int | None:
            port = self.master_port()
            if port and port != old_port and _info(port, "replication").get("role") == "master":
                return port
            return None

        return wait_until(promoted, timeout=timeout, interval=0.05)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


class ClusterSetup:
    """A Redis Cluster of 3 masters, each with one replica."""

    def __init__(
        self, tmp: Path, masters: int = 3, node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS
    ) -> None:
        self.tmp = tmp
        self.node_timeout_ms = node_timeout_ms
        self.nodes = [self._node(i) for i in range(masters * 2)]
        self.masters = masters

    def _node(self, i: int) -> Proc:
        return _redis_server(
            self.tmp,
            f"node{i}",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # the bus port would be port + 10000, which may be taken or > 65535
            "--cluster-port",
            str(free_port()),
            # a replica that lost its master for a while may still take over
            "--cluster-replica-validity-factor",
            "0",
        )

    def url(self, scheme: str = "redis+cluster") -> str:
        return f"{scheme}://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes[:2])

    def start(self) -> ClusterSetup:
        for node in self.nodes:
            node.start()
        exe = shutil.which("redis-cli")
        assert exe, "redis-cli is not installed (make test installs redis-tools)"
        addresses = [f"{HOST}:{n.port}" for n in self.nodes]
        subprocess.run(
            [exe, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self.healthy, timeout=30, interval=0.1)
        return self

    def live_nodes(self) -> list[Proc]:
        return [n for n in self.nodes if n.alive]

    def healthy(self) -> bool:
        """Every live node sees the cluster ok, with the expected masters, replicas in sync."""
        live = self.live_nodes()
        for node in live:
            info = ask(node.port, "CLUSTER", "INFO")
            if not info or "cluster_state:ok" not in info:
                return False
            # every node knows every other, in its current role: a master that still
            # takes a fresh replica for a master denies it its vote in a failover
            if f"cluster_known_nodes:{len(self.nodes)}" not in info:
                return False
            if self._roles_seen_by(node) != (self.masters, len(live) - self.masters):
                return False
        roles = [_info(n.port, "replication") for n in live]
        masters = [r for r in roles if r.get("role") == "master"]
        synced = all(r.get("master_link_status") == "up" for r in roles if r.get("role") == "slave")
        return len(masters) == self.masters and synced

    def _roles_seen_by(self, node: Proc) -> tuple[int, int]:
        """(live masters, replicas) in ``node``'s CLUSTER NODES view."""
        lines = (ask(node.port, "CLUSTER", "NODES") or "").splitlines()
        flags = [line.split()[2].split(",") for line in lines if len(line.split()) > 2]
        alive = [f for f in flags if "fail" not in f and "fail?" not in f]
        return sum("master" in f for f in alive), sum("slave" in f for f in alive)

    def master_of_slot(self, slot: int) -> Proc:
        for node in self.live_nodes():
            for start, end, master, *_ in ask(node.port, "CLUSTER", "SLOTS") or []:
                if start <= slot <= end:
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no live node serves slot {slot}")

    def replica_of(self, master: Proc) -> Proc:
        for node in self.live_nodes():
            info = _info(node.port, "replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                return node
        raise AssertionError(f"no live replica of {master.port}")

    def failover_to(self, replica: Proc, attempts: int = 3) -> None:
        """A manual (coordinated) failover: ``replica`` takes its master's slots.

        Redis gives a manual failover 5 s to collect the masters' votes and then
        drops it; on a loaded machine that can pass, so ask again, as an operator would.
        """

        def promoted() -> bool:
            return _info(replica.port, "replication").get("role") == "master"

        for attempt in range(attempts):
            assert ask(replica.port, "CLUSTER", "FAILOVER")
            try:
                wait_until(promoted, timeout=8, interval=0.05)
                break
            except AssertionError:
                if attempt == attempts - 1:
                    raise
        wait_until(self.healthy, timeout=30, interval=0.1)

    def keyslot(self, key: str) -> int:
        return int(ask(self.live_nodes()[0].port, "CLUSTER", "KEYSLOT", key))

    def wait_failover(self, victim: Proc, slot: int, timeout: float = 30) -> Proc:
        """Wait until another node serves ``slot`` as master and the cluster is ok."""

        def promoted() -> Proc | None:
            try:
                owner = self.master_of_slot(slot)
            except (AssertionError, TypeError):
                return None
            if owner is victim:
                return None
            info = ask(owner.port, "CLUSTER", "INFO")
            return owner if info and "cluster_state:ok" in info else None

        return wait_until(promoted, timeout=timeout, interval=0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def redis_memory(port: int) -> int:
    """used_memory of one server, bytes."""
    return int(_info(port, "memory").get("used_memory", 0))


def wait_writable(port: int, timeout: float = 10) -> None:
    wait_until(lambda: ask(port, "SET", "probe", "1"), timeout=timeout)


@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A healthy Sentinel setup for the whole module."""
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture(scope="module")
def cluster_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    """A healthy Redis Cluster for the whole module."""
    setup = ClusterSetup(tmp_path_factory.mktemp("cluster"))
    try:
        yield setup.start()
    finally:
        setup.stop()


def elapsed(since: float) -> float:
    return time.monotonic() - since
