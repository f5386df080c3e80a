"""What a person sees: the configuration line, the CPU map, the final summary, progress.

Formatting functions return lists of lines and print nothing (pyperf's rule): the
manager prints them while a run is live, ``report`` prints them from a saved run, and
tests compare them.  The netstat -m and vmstat -z lines themselves come from the
allocator's one formatter (``allocator.netstat_m_lines`` / ``allocator.vmstat_z_lines``);
this module only rebuilds an ``allocator.Stats`` from a run.json document to feed it.

The only thing here that writes is :class:`Progress`, a one-line indicator drawn on
stderr and only when stderr is a terminal, so logs and pipes stay clean.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from stress.config import RunConfig
from stress.documents import package_version
from stress.output.profile import lock_profile_lines

VERDICT_WORDS = {
    "ok": "ok: the run completed and every audit passed",
    "wedged": "WEDGED in [zonelimit]: CPUs slept on the zone limit and no CPU made progress",
    "leak": "LEAK: items were lost (allocated, yet owned by no CPU, ring, cache or slab)",
    "double-free": "DOUBLE FREE: an item was freed twice or owned twice",
    "corrupt": "CORRUPT: an INVARIANTS panic, a poison, payload or refcount check failed, or a counter "
               "drifted",
    "lock-order": "LOCK-ORDER reversal: two locks were taken in both orders (WITNESS)",
    "error": "ERROR: the tester itself failed (not a verdict on the allocator)",
    "stalled": "STALLED: a CPU neither made progress nor slept on a known wait channel (the tester's "
               "problem, not a verdict on the allocator)",
    "interrupted": "interrupted",
}
"""The verdict of run.json in words (cli.md exit codes: ok 0, error and stalled 3,
interrupted 130 or 143, the others 1)."""


def _num(x: float) -> str:
    """A duration or rate without noise: 10 -> '10', 0.25 -> '0.25', 1.0/3 -> '0.333'."""
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def config_line(cfg: RunConfig) -> str:
    """The configuration in one line, printed first so every log says what was run."""
    parts = [
        f"workload {cfg.workload}",
        f"era {cfg.era} (refcount {cfg.refcount}, wakeup {cfg.wakeup}, policy {cfg.policy})",
        f"{cfg.cpus} CPU{'s' if cfg.cpus != 1 else ''}",
        f"nmbclusters {cfg.nmbclusters}",
        f"duration {_num(cfg.duration)} s",
    ]
    if cfg.rounds:
        parts.append(f"{cfg.rounds} rounds of {_num(cfg.round_length)} s, idle {_num(cfg.idle)} s")
    parts.append(f"interval {_num(cfg.interval)} s")
    parts.append(f"wedge-timeout {_num(cfg.wedge_timeout)} s")
    if cfg.policy != "none":
        parts.append(f"trim-interval {_num(cfg.trim_interval)} s")
    if cfg.policy_params:
        parts.append("policy params " + ",".join(f"{k}={v:g}" for k, v in sorted(cfg.policy_params.items())))
    parts.append(f"seed {cfg.seed}")
    if cfg.inject:
        parts.append("inject " + ",".join(cfg.inject))
    if cfg.sched != "free":
        sched = f"sched {cfg.sched}"
        if cfg.sched == "jitter":
            sched += f" p={cfg.jitter:g}"
        elif cfg.sched == "pct":
            sched += f" depth {cfg.pct_depth}"
        parts.append(sched)
    for flag, name in (
        (cfg.invariants, "INVARIANTS"),
        (cfg.lock_profile, "LOCK_PROFILING"),
        (cfg.profile, "py-spy profile"),
        (cfg.oversubscribe, "oversubscribed"),
    ):
        if flag:
            parts.append(name)
    return f"zonelimit {package_version()}: " + ", ".join(parts)


def mapping_lines(mapping: dict[int, int]) -> list[str]:
    """The simulated CPU -> real core map, one line per CPU, shared cores marked.

    A core running two simulated CPUs interleaves them instead of running them in
    parallel, which changes what races can show: the mark says so.
    """
    per_core: dict[int, int] = {}
    for core in mapping.values():
        per_core[core] = per_core.get(core, 0) + 1
    width = len(str(max(mapping, default=0)))
    lines = []
    for cpu in sorted(mapping):
        core = mapping[cpu]
        shared = f"  (shared by {per_core[core]} CPUs)" if per_core[core] > 1 else ""
        lines.append(f"CPU {cpu:>{width}} -> core {core}{shared}")
    return lines


def stats_from_doc(doc: dict[str, Any]) -> Any:
    """Rebuild an ``allocator.Stats`` from run.json's "zones" and "netstat" blocks.

    So that ``report`` prints a saved run with the very formatter the live run used.
    """
    import allocator

    return allocator.Stats.from_dict({"zones": doc.get("zones", []), "netstat": doc.get("netstat", {})})


def vmstat_lines(doc: dict[str, Any]) -> list[str]:
    """The vmstat -z table of a run document, through the allocator's formatter."""
    if not doc.get("zones"):
        return ["vmstat -z: no zone statistics recorded"]
    import allocator

    return list(allocator.vmstat_z_lines(stats_from_doc(doc)))


def netstat_lines(doc: dict[str, Any]) -> list[str]:
    """The final netstat -m lines of a run document, through the allocator's formatter."""
    if not doc.get("zones"):  # netstat -m is derived from the zone rows, as in FreeBSD
        return ["netstat -m: no statistics recorded"]
    import allocator

    return list(allocator.netstat_m_lines(stats_from_doc(doc)))


def _count(d: Any, key: str) -> int:
    v = d.get(key, 0) if isinstance(d, dict) else 0
    return int(v or 0)


def audit_lines(audit: dict[str, Any] | None) -> list[str]:
    """The conservation audit in words: the true leak (lost) apart from the pseudo-leak (stranded)."""
    if not audit:
        return ["audit: not run"]
    lost = audit.get("lost") or {}
    stranded = audit.get("stranded") or {}
    lines = [f"audit: {_count(audit, 'items_accounted'):,} items accounted for"]
    lost_total = sum(int(v or 0) for v in lost.values())
    lost_text = ", ".join(f"{int(v or 0):,} {k}{'s' if int(v or 0) != 1 else ''}" for k, v in lost.items())
    lines.append(
        f"  lost (true leak, owned by no one): {lost_text or 'nothing'}"
        + ("" if lost_total == 0 else "  <-- LEAK")
    )
    if stranded:
        text = ", ".join(f"{int(v or 0):,} {k.replace('_', ' ')}" for k, v in stranded.items())
        lines.append(f"  stranded (pseudo-leak, cached, not in use): {text}")
    checks = ("double_owned", "poison_errors", "payload_errors")
    lines.append("  " + ", ".join(f"{k.replace('_', ' ')}: {_count(audit, k):,}" for k in checks))
    for key, value in audit.items():
        if key not in {"items_accounted", "lost", "stranded", "item_histories", *checks}:
            lines.append(f"  {key.replace('_', ' ')}: {_words(value)}")
    return lines + item_history_lines(audit)


def item_history_lines(audit: dict[str, Any]) -> list[str]:
    """The audit block's ``item_histories`` (INVARIANTS): how each lost or double-freed
    item got there, one line per item."""
    histories = audit.get("item_histories")
    if not isinstance(histories, list):
        return []
    from allocator.audit import history_lines

    return history_lines([h for h in histories if isinstance(h, dict) and isinstance(h.get("history"), list)])


def _words(value: Any, limit: int = 5) -> str:
    """A value of run.json for a person: ``{"rx_drops": 0, "bytes": 1500}`` -> ``rx drops 0, bytes 1,500``.

    Lists show their first ``limit`` elements and say how many more there are.
    """
    if isinstance(value, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {_words(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        shown = [f"({_words(v)})" if isinstance(v, dict) else _words(v) for v in value[:limit]]
        more = f" ... ({len(value) - limit} more)" if len(value) > limit else ""
        return (", ".join(shown) or "none") + more
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def throughput_lines(doc: dict[str, Any]) -> list[str]:
    """Operations done, per second, and per CPU per second."""
    ops = doc.get("ops") or {}
    if not ops:
        return ["throughput: not recorded"]
    total = int(ops.get("total", 0) or 0)
    per_s = float(ops.get("per_s", 0.0) or 0.0)
    duration = float(doc.get("duration_s", 0.0) or 0.0)
    line = f"throughput: {total:,} ops in {duration:.1f} s = {per_s:,.0f} ops/s"
    per_cpu = ops.get("per_cpu_per_s") or []
    if per_cpu:
        line += " (per CPU: " + " ".join(f"{float(x):,.0f}" for x in per_cpu) + ")"
    return [line]


def workload_lines(workload: dict[str, Any] | None, trim: dict[str, Any] | None = None) -> list[str]:
    """The workload's own counts (packets, bytes verified, drops) and what the trim callout did."""
    lines = []
    if isinstance(workload, dict) and workload:
        rest = {k: v for k, v in workload.items() if k != "name"}
        lines.append(f"workload {workload.get('name', '?')}: {_words(rest)}")
    if isinstance(trim, dict) and trim.get("intervals"):
        lines.append(f"trim callout: {_words(trim)}")
    return lines


def lock_lines(locks: list[dict[str, Any]] | None, top: int = 10) -> list[str]:
    """The run's LOCK_PROFILING table (most waited-on first), or nothing when the run
    was not lock-profiled.  One formatter for every place that prints it:
    :func:`stress.output.profile.lock_profile_lines`."""
    if not locks:
        return []
    return ["lock contention (LOCK_PROFILING, microseconds):", *lock_profile_lines(locks, top)]


def wedge_lines(wedge: dict[str, Any] | None) -> list[str]:
    """Where and when the system wedged, as the watchdog saw it."""
    if not wedge:
        return []
    cpus = wedge.get("sleeping_cpus") or []
    line = (
        f"wedged in [{wedge.get('wchan', 'zonelimit')}] at {float(wedge.get('at_s', 0) or 0):.1f} s: "
        f"zone {wedge.get('zone', '?')}, CPU{'s' if len(cpus) != 1 else ''} "
        f"{','.join(str(c) for c in cpus) or '?'} asleep"
    )
    lines = [line]
    extra = {k: v for k, v in wedge.items() if k not in {"at_s", "zone", "wchan", "sleeping_cpus"}}
    for k, v in extra.items():
        lines.append(f"  {k.replace('_', ' ')}: {_words(v)}")
    return lines


def peak_lines(peak: dict[str, Any] | None) -> list[str]:
    """The high-water marks of the run (the demand the caches grew to)."""
    if not peak:
        return []
    return ["peak: " + ", ".join(f"{k.replace('_', ' ')} {int(v or 0):,}" for k, v in peak.items())]


def verdict_lines(doc: dict[str, Any]) -> list[str]:
    """The verdict in words with its exit code, then its detail (an error's message)
    indented, then what the audit found when the verdict is not the audit's own.

    An interrupted run reads ``verdict: interrupted at 2.4 s of 20 s by SIGINT (exit 130)``."""
    verdict = str(doc.get("verdict", "?"))
    code = doc.get("exit_code", "?")
    if verdict == "interrupted":
        lines = [f"verdict: {doc.get('verdict_detail') or 'interrupted'} (exit {code})"]
        if doc.get("error"):
            lines += ["  " + line for line in str(doc["error"]).strip().splitlines()]
    else:
        words = VERDICT_WORDS.get(verdict, f"{verdict}: unknown verdict")
        lines = [f"verdict: {words} (exit {code})"]
        detail = doc.get("error") or doc.get("verdict_detail")
        if detail:
            lines += ["  " + line for line in str(detail).strip().splitlines()]
    judged = doc.get("audit_verdict")
    if judged:
        why = doc.get("audit_verdict_detail")
        lines.append(f"  the audit of the {'partial ' if verdict == 'interrupted' else ''}run: {judged}"
                     + (f" ({why})" if why else ""))
    return lines


def stall_lines(stall: dict[str, Any] | None) -> list[str]:
    """Which CPUs stalled, how, and where their stacks are."""
    if not stall:
        return []
    lines = [f"stalled at {float(stall.get('at_s', 0) or 0):.1f} s: {stall.get('how', '?')}"]
    if stall.get("stacks"):
        lines.append(f"  stacks: {stall['stacks']} (in the run folder)")
    return lines


def schedule_lines(schedule: dict[str, Any] | None) -> list[str]:
    """What the controlled scheduler did (pct: recorded; replay: followed, and where it diverged)."""
    if not schedule:
        return []
    mode = schedule.get("mode", "?")
    plan = (f"seed {schedule.get('seed', '?')}, depth {schedule.get('depth', '?')}, "
            f"period {_words(schedule.get('steps', '?'))} steps")
    line = f"schedule: {mode} ({plan}): {_words(schedule.get('total_steps', 0))} steps"
    if mode == "replay":
        line += (f", {_words(schedule.get('replayed', 0))} of {_words(schedule.get('recorded', 0))} "
                 "recorded switches followed")
        if schedule.get("divergences"):
            n = int(schedule["divergences"])
            line += (f"; DIVERGED at step {_words(schedule.get('diverged_at_step', '?'))} "
                     f"({n:,} divergence{'s' if n != 1 else ''})")
    else:
        line += f", {_words(schedule.get('switches', 0))} switches recorded"
    if schedule.get("overflow"):
        line += "; the log overflowed (not every switch was recorded)"
    return [line]


def stop_lines(stop: dict[str, Any] | None) -> list[str]:
    """How the run stopped, when it was not simply the end of --duration."""
    if not stop or stop.get("reason") in (None, "completed"):
        return []
    line = f"stopped: {stop.get('reason')}"
    if stop.get("signal"):
        line += f" ({stop['signal']})"
    return [line]


def summary_lines(doc: dict[str, Any], folder: Path) -> list[str]:
    """The end-of-run summary: vmstat -z, peak, audit, throughput, locks, wedge, verdict, folder.

    The audit is printed in the allocator's own words when the run recorded them
    (``audit_lines``, from ``AuditReport``), followed by the tester's checks; a run
    without them is described from the ``audit`` block.
    """
    lines = vmstat_lines(doc)
    lines += peak_lines(doc.get("peak"))
    recorded = doc.get("audit_lines")
    audit = doc.get("audit") or {}
    if isinstance(recorded, list) and recorded:
        lines += [str(line) for line in recorded]
        checks = ("double_owned", "poison_errors", "payload_errors")
        lines.append("  " + ", ".join(f"{k.replace('_', ' ')}: {_count(audit, k):,}" for k in checks))
        # the histories of panicked items (duplicate free) are the tester's: not in the allocator's lines
        lines += [line for line in item_history_lines(audit) if line not in recorded]
    else:
        lines += audit_lines(audit)
    lines += schedule_lines(doc.get("schedule"))
    lines += stop_lines(doc.get("stop"))
    lines += throughput_lines(doc)
    lines += workload_lines(doc.get("workload"), doc.get("trim"))
    lines += lock_lines(doc.get("locks"))
    lines += wedge_lines(doc.get("wedge"))
    lines += stall_lines(doc.get("stall"))
    lines += verdict_lines(doc)
    lines.append(f"run folder: {folder}")
    return lines


class Progress:
    """A one-line progress indicator on stderr, drawn only when stderr is a terminal.

    Call :meth:`update` as often as convenient, :meth:`clear` before printing other
    lines to the same terminal, and :meth:`close` at the end (safe twice).
    """

    def __init__(self, duration: float, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        """``duration``: seconds the bar spans; ``enabled`` defaults to "stream is a terminal"."""
        self.duration = max(float(duration), 1e-9)
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._drawn = 0
        self._text = ""

    def render(self, elapsed: float, note: str = "", width: int = 80) -> str:
        """The text of the indicator for ``elapsed`` seconds (what :meth:`update` draws)."""
        frac = min(max(elapsed / self.duration, 0.0), 1.0)
        tail = f" {elapsed:6.1f}/{self.duration:.0f} s {frac:4.0%}"
        if note:
            tail += f"  {note}"
        bar_width = max(10, min(40, width - len(tail) - 3))
        filled = int(round(frac * bar_width))
        text = "[" + "#" * filled + "." * (bar_width - filled) + "]" + tail
        return text[: width - 1]

    def update(self, elapsed: float, note: str = "") -> None:
        """Redraw the indicator in place (no-op when not enabled)."""
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 24)).columns
        text = self.render(elapsed, note, width)
        if text == self._text and self._drawn:
            return  # nothing changed: spare the terminal a write
        self._text = text
        pad = " " * max(0, self._drawn - len(text))
        self.stream.write("\r" + text + pad)
        self.stream.flush()
        self._drawn = len(text)

    def clear(self) -> None:
        """Erase the indicator so that other output starts on a clean line."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0

    def close(self) -> None:
        """Erase the indicator for good."""
        self.clear()
        self.enabled = False


# --- stat: a live run's arena (stress/commands/stat.py) -----------------------------------------


def percpu_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The per-CPU bucket table: each CPU's alloc and free bucket of each zone, items /
    capacity (libmemstat's per-CPU cache, memstat_uma.c; ``-`` where the CPU holds no
    bucket).  The FREE column of vmstat -z counts these items too."""
    lines = [f"{'CPU':>3}  {'ZONE':<14}{'ALLOC':>9}{'FREE':>9}{'CACHED':>8}"]

    def bucket(items: int, size: int) -> str:
        return f"{items}/{size}" if size else "-"

    for r in rows:
        lines.append(f"{r['cpu']:>3}  {r['zone']:<14}{bucket(r['alloc_items'], r['alloc_size']):>9}"
                     f"{bucket(r['free_items'], r['free_size']):>9}{r['alloc_items'] + r['free_items']:>8}")
    return lines


def sleeper_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Who sleeps where, as ``ps -axl`` shows it: STAT D (msleep without PCATCH, as
    uma's keg sleep is: uninterruptible) and MWCHAN, the wait channel ("zonelimit")."""
    if not rows:
        return ["no CPU asleep"]
    lines = [f"{'CPU':>3} {'PID':>7} STAT {'MWCHAN':<10} {'ZONE':<14}{'SLEPT':>9}"]
    for r in rows:
        slept = f"{r['slept_s']:.2f} s" if r.get("slept_s") is not None else "-"
        lines.append(f"{r['cpu']:>3} {r['pid']:>7} D    {r['wchan']:<10} {r['zone']:<14}{slept:>9}")
    return lines


def lock_holder_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Locks held now, after DDB's ``show alllocks``: the holder, then the lock."""
    if not rows:
        return ["no lock held"]
    lines = []
    for r in rows:
        lines.append(f"Process {r['pid']} ({r['owner']})")
        lines.append(f"exclusive sleep mutex {r['lock']} r = 0 locked")
    return lines


def stat_lines(snap: dict[str, Any]) -> list[str]:
    """One interval of ``stress stat``: vmstat -z, netstat -m, the per-CPU buckets,
    sleepers and lock holders, each under its FreeBSD command's name."""
    age = f", run age {snap['t_s']:.1f} s" if snap.get("t_s") is not None else ""
    lines = [f"--- pid {snap['pid']}{age} ---", "", "vmstat -z:"]
    lines += vmstat_lines(snap) + ["", "netstat -m:"] + netstat_lines(snap)
    lines += ["", "per-CPU buckets (items/size):"] + percpu_lines(snap["percpu"])
    lines += ["", "sleeping (ps -axl):"] + sleeper_lines(snap["sleepers"])
    lines += ["", "locks held (show alllocks):"] + lock_holder_lines(snap["locks"])
    return lines + [""]


def lost_words(lost: list[dict[str, Any]], name: str) -> str:
    """``run k3 seed 0 lost after 4 attempts (KilledWorker: ...)``: the first of the runs an
    executor lost (``name``: how to call it, formatted with its record), and how many more."""
    first = lost[0]
    tries = len(first.get("attempts") or [])
    where = f" after {tries} attempt{'' if tries == 1 else 's'}" if tries else ""
    more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
    return f"{name.format(**first)} lost{where} ({first['reason']}){more}"
