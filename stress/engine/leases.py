"""Core leases: every run on a host holds its own disjoint set of cores.

Runs started side by side (by hand, by ``compare --jobs J``, by Dask tasks on a worker
host) must never pin two simulated CPUs of different runs to one core: the runs would
time-share it and no longer race the way SMP CPUs do (architecture.md, hard
requirement 1).  So each run leases cores from a per-host table before it pins anything,
the way FreeBSD's cpuset(2) gives a process group a set of CPUs of its own
(kern_cpuset.c: cpuset_create, cpuset_setproc) -- here between unrelated processes, so the
table lives in a file.

The table (``cores.json``) is read and rewritten only under an exclusive ``fcntl.flock``
of a lock file beside it (``cores.lock``), and written by rename, so a writer killed
mid-write leaves the old table.  Each entry names its holder by pid *and* start time
(``/proc/PID/stat`` field 22): a holder that died, even by SIGKILL, or whose pid was
reused, is dead, and its entry is dropped by the next process that takes the lock.
Nothing has to clean up after a killed run: the lease dies with the process.

A parent can take a lease *for* a child (``compare --jobs``, a Dask task) and hand it
over: the child, started with ``--cores`` and :data:`HANDOVER_ENV` naming its parent,
rewrites the entry to its own pid, so the lease then lives exactly as long as the run.

The table's folder is ``$ZONELIMIT_LEASE_DIR`` or ``/tmp/zonelimit-leases``; the test
suite gives each pytest process its own (tests/conftest.py), so the suites of several
people on one machine do not wait on each other's runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stress.cpulist import format_cpulist, parse_cpulist, usable_cores

LEASE_DIR_ENV = "ZONELIMIT_LEASE_DIR"
HANDOVER_ENV = "ZONELIMIT_LEASE_FROM"  #: "PID:ID": the parent that leased this child's --cores, and the lease
DEFAULT_DIR = Path("/tmp/zonelimit-leases")
WAIT_POLL_S = 0.2  #: how often a waiting run looks at the table again
#: how long a run waits for cores others hold before it gives up (``--lease-wait``): long
#: enough for a run of the default length started by hand beside it to end, short enough
#: that a forgotten hunt holding the host does not leave a scripted run waiting for ever
LEASE_WAIT_S = 600.0
SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")


class LeaseError(Exception):
    """Cores cannot be leased: taken by another run, or not usable here."""


class LeaseTimeout(LeaseError):
    """Other runs held the cores for longer than the caller would wait (``--lease-wait``)."""


def lease_dir() -> Path:
    return Path(os.environ.get(LEASE_DIR_ENV) or DEFAULT_DIR)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22),
    or None when there is no such process: with the pid it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def alive(holder: dict[str, Any]) -> bool:
    """Whether the process an entry names is still the one that took it."""
    return start_time(int(holder.get("pid", 0))) == holder.get("start")


# --- topology -----------------------------------------------------------------------------------


def _cpulist_file(path: Path) -> list[int]:
    try:
        return parse_cpulist(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return []


def topology(cores: list[int] | None = None) -> dict[str, Any]:
    """SMT sibling groups and NUMA nodes of ``cores`` (default: the usable ones), from
    /sys (a core /sys says nothing about is its own group, e.g. in some containers)."""
    cores = usable_cores() if cores is None else cores
    groups: list[str] = []
    for c in cores:
        sib = _cpulist_file(SYS_CPU / f"cpu{c}" / "topology" / "thread_siblings_list") or [c]
        text = format_cpulist(sib)
        if text not in groups:
            groups.append(text)
    nodes: dict[str, str] = {}
    for node in sorted(SYS_NODE.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        mine = [c for c in _cpulist_file(node / "cpulist") if c in cores]
        if mine:
            nodes[node.name[4:]] = format_cpulist(mine)
    return {"smt_siblings": groups, "numa_nodes": nodes}


def _node_of(nodes: dict[str, str]) -> dict[int, str]:
    return {c: n for n, text in nodes.items() for c in parse_cpulist(text)}


# --- the table ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked_table() -> Iterator[dict[str, Any]]:
    """The lease table, live entries only, under the exclusive lock; written back on exit."""
    folder = lease_dir()
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        _share(folder, 0o777)  # every user's runs on this host lease from the one table
    fd = os.open(folder / "cores.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)
    except OSError:
        pass  # another user's lock file: already shared by its maker
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = folder / "cores.json"
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
            leases = [e for e in table.get("leases", []) if isinstance(e, dict) and alive(e)]
        except (OSError, ValueError, AttributeError):
            leases = []  # no table yet, or one we cannot read: nobody's lease survives it
        table = {"leases": leases}
        yield table
        tmp = folder / f"cores.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
        _share(tmp, 0o666)
        os.replace(tmp, path)
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def _share(path: Path, mode: int) -> None:
    """Make ``path`` usable by every user (the umask took the bits away); a path of
    another user's we cannot change is left as it is."""
    try:
        os.chmod(path, mode)
    except OSError:
        pass


@dataclass
class Lease:
    """Cores held by one process; :meth:`release` (or the holder's death) frees them."""

    cores: list[int]
    pid: int
    start: int | None
    how: str  #: "leased" (chosen from the free cores), "picked" (--cores), "handed" (from a parent)
    id: str = ""  #: unique on the host: a holder may release one lease while it holds another

    def release(self) -> None:
        """Drop this lease's entry (nothing happens if it was handed over or is gone)."""
        try:
            with _locked_table() as table:
                table["leases"] = [e for e in table["leases"] if not (
                    e["pid"] == self.pid and e["start"] == self.start and e.get("id") == self.id)]
        except OSError:
            pass

    def handover(self) -> str:
        """The :data:`HANDOVER_ENV` value for the child that takes this lease over."""
        return f"{self.pid}:{self.id}"

    def record(self) -> dict[str, Any]:
        return {"cores": format_cpulist(self.cores), "lease": self.how}


def _taken(table: dict[str, Any]) -> dict[int, int]:
    return {c: int(e["pid"]) for e in table["leases"] for c in e["cores"]}


def _choose(free: list[int], n: int, nodes: dict[str, str]) -> list[int]:
    """``n`` of the free cores: within one NUMA node when one has enough (its memory is
    local to all of them), else the lowest-numbered ones."""
    node_of = _node_of(nodes)
    by_node: dict[str, list[int]] = {}
    for c in free:
        by_node.setdefault(node_of.get(c, "?"), []).append(c)
    for cores in by_node.values():
        if len(cores) >= n:
            return cores[:n]
    return free[:n]


_serial = 0


def _add(table: dict[str, Any], cores: list[int], what: str, how: str) -> Lease:
    global _serial
    me = os.getpid()
    _serial += 1
    start = start_time(me)
    lease = Lease(sorted(cores), me, start, how, f"{me}.{start}.{_serial}")
    table["leases"].append({"cores": lease.cores, "pid": me, "start": lease.start, "id": lease.id, "what": what})
    return lease



def try_acquire(n: int, what: str = "run") -> Lease | None:
    """``n`` free usable cores leased to this process, or None when fewer are free."""
    usable = usable_cores()
    n = max(1, min(n, len(usable)))
    with _locked_table() as table:
        taken = _taken(table)
        free = [c for c in usable if c not in taken]
        if len(free) < n:
            return None
        return _add(table, _choose(free, n, topology(usable)["numa_nodes"]), what, "leased")


def holders() -> dict[int, int]:
    """Core -> pid of its live holder."""
    with _locked_table() as table:
        return _taken(table)


def busy_words(n: int) -> str:
    """``2 free cores: 0-1 leased by pid 4242``: what a run waiting for ``n`` cores waits for."""
    held = holders()
    pids = ", ".join(str(p) for p in sorted(set(held.values())))
    want = max(1, min(n, len(usable_cores())))
    return f"{want} free core{'' if want == 1 else 's'}: {format_cpulist(list(held)) or 'none'} leased by " \
           f"pid {pids or '-'}"


def acquire(n: int, what: str = "run", waiting: Callable[[str], None] | None = None,
            check: Callable[[], None] | None = None, limit: float | None = None,
            clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Lease:
    """Lease ``n`` cores (at most the usable ones), waiting while others hold them;
    ``waiting`` is told once, in words, whom we wait for; ``check`` is called before each
    look (a stop signal's ``check`` raises, ending the wait).  ``limit``: seconds to wait
    at most (0: one look), then :class:`LeaseTimeout` naming the holders; None: no limit.
    (``clock`` and ``sleep``: the time, for a test.)"""
    told = False
    since = clock()
    while True:
        if check is not None:
            check()
        lease = try_acquire(n, what)
        if lease is not None:
            return lease
        waited = clock() - since
        if limit is not None and waited >= limit:
            raise LeaseTimeout(f"gave up after {waited:.0f} s (--lease-wait {limit:g}) waiting for {busy_words(n)}")
        if waiting is not None and not told:
            waiting(f"waiting for {busy_words(n)}"
                    + (f" (at most {limit:g} s: --lease-wait)" if limit is not None else ""))
            told = True
        sleep(WAIT_POLL_S if limit is None else max(0.0, min(WAIT_POLL_S, limit - waited)))


def pick(cores: list[int], what: str = "run") -> Lease:
    """Lease exactly ``cores`` (``run --cores``): refused when one is not usable or is held;
    taken over when the parent that started us leased them for us (:data:`HANDOVER_ENV`)."""
    usable = usable_cores()
    outside = [c for c in cores if c not in usable]
    if outside:
        raise LeaseError(f"core{'s' if len(outside) > 1 else ''} {format_cpulist(outside)} not usable here "
                         f"(usable: {format_cpulist(usable)})")
    parent, _, lease_id = os.environ.get(HANDOVER_ENV, "").partition(":")
    me, ppid = os.getpid(), os.getppid()
    with _locked_table() as table:
        if parent.isdigit() and int(parent) == ppid:
            for e in table["leases"]:
                if e["pid"] == ppid and e.get("id") == lease_id and e["cores"] == sorted(cores):
                    e["pid"], e["start"], e["what"] = me, start_time(me), what
                    return Lease(sorted(cores), me, e["start"], "handed", lease_id)
        taken = _taken(table)
        busy = [c for c in cores if c in taken]
        if busy:
            pids = ", ".join(str(p) for p in sorted({taken[c] for c in busy}))
            raise LeaseError(f"core{'s' if len(busy) > 1 else ''} {format_cpulist(busy)} leased by "
                             f"another run (pid {pids})")
        return _add(table, cores, what, "picked")


# --- the lease this process runs in -------------------------------------------------------------

_current: Lease | None = None
_why_unleased = ""
_host_cores: list[int] = []


@contextlib.contextmanager
def running_in(lease: Lease | None, unleased: str = "") -> Iterator[None]:
    """Run the block on the lease's cores only (the affinity mask: the manager pins its
    workers within it), and release the lease after.  ``lease`` None: no lease,
    ``unleased`` says why (recorded in run.json)."""
    global _current, _why_unleased, _host_cores
    old = os.sched_getaffinity(0)
    _current, _why_unleased, _host_cores = lease, unleased, sorted(old)
    try:
        if lease is not None:
            os.sched_setaffinity(0, set(lease.cores))
        yield
    finally:
        _current, _why_unleased, _host_cores = None, "", []
        if lease is not None:
            os.sched_setaffinity(0, old)
            lease.release()


def pinning_record(mapping: dict[int, int]) -> dict[str, Any]:
    """run.json ``host.pinning``: simulated CPU -> core, the cores the run held and how it
    got them, and the host topology (SMT siblings and NUMA nodes of the usable cores)."""
    held = _current.record() if _current is not None else {
        "cores": format_cpulist(usable_cores()), "lease": "none", "unleased": _why_unleased or "not leased"}
    return {"cpus": {str(k): c for k, c in mapping.items()}, **held, **topology(_host_cores or None)}
