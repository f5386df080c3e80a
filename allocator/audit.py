"""The conservation audit: account for every mbuf and cluster exactly once.

Taken at a quiescent point (no CPU inside the allocator, except CPUs asleep in
zonelimit, which sleep at a point where everything they hold is in the arena).  It
walks every keg slab free list, every per-CPU bucket, every zone bucket list, every
bucket or item a CPU has in hand (``uc_fillbucket``, ``uc_initem``) and the mbufs the
consumers say they hold, and classifies:

mbufs     free in keg | cached (zone, per-CPU or list) | in hand | held | LOST
clusters  free in keg | cached in mbuf_cluster | attached to a cached packet
          (STRANDED: the pseudo-leak) | attached to a held or in-hand mbuf | LOST
          (nobody references it and it is neither free nor cached: the true leak)

An item found in two places is *double-owned*.  Under INVARIANTS the report carries the
recorded history of the first few lost and double-owned items (allocator/history.py):
who allocated, freed and referenced them last, and at which step.  The zone counters are checked against
the walk: ``mbuf.USED + mbuf_packet.USED`` must equal the mbufs in use, and
``mbuf_cluster.USED`` the clusters neither free nor cached.

A CPU killed in the middle of an operation (not asleep at the zonelimit safe point) may
have had items in its hands that no array records yet: an item popped from a bucket
and not yet returned, an mbuf between its allocation and the consumer's record, a
reference half dropped.  Those look exactly like lost, double-owned or miscounted
items, and blaming the allocator for them would be false.  :meth:`AuditReport.set_aside`
takes up to a bound per killed CPU (the caller's: what one CPU can hold between two
records) out of those findings and reports them as *in the hands of a killed CPU*;
only what exceeds the bound stays lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .history import HISTORY_ITEMS, has_history, history_words
from .layout import (
    BUCKET_MAX,
    CLUSTER_IPERS,
    EXT_PACKET,
    KEG_NAMES,
    MBUF_IPERS,
    NZONES,
    ZONE_CLUSTER,
    ZONE_KEG,
    ZONE_NAMES,
    ZONE_PACKET,
)
from .stats import Stats

_SAMPLE = 20  # ids listed per finding


@dataclass
class AuditReport:
    """What the audit found.  ``ok`` is true when nothing is lost, double-owned or
    drifting; stranded clusters are reported but are not a failure by themselves."""

    mbufs: int = 0
    clusters: int = 0
    mbufs_free_in_keg: int = 0
    clusters_free_in_keg: int = 0
    cached: dict[str, dict[str, int]] = field(default_factory=dict)
    in_hand: dict[str, int] = field(default_factory=dict)
    mbufs_held: int = 0
    clusters_in_use: int = 0
    clusters_stranded: int = 0
    lost_mbufs: int = 0
    lost_clusters: int = 0
    lost_mbuf_ids: list[int] = field(default_factory=list)
    lost_cluster_ids: list[int] = field(default_factory=list)
    lost_cluster_refcounts: list[int] = field(default_factory=list)
    double_owned: int = 0
    double_owned_examples: list[str] = field(default_factory=list)
    refcount_errors: int = 0
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    counter_drift: int = 0
    #: findings a killed CPU may explain (set_aside): cpus, per_cpu bound, and per kind how many
    in_killed_hands: dict[str, Any] = field(default_factory=dict)
    #: INVARIANTS: the recorded history of the first few lost / double-owned items, each
    #: {"finding": "lost" | "double-owned", "keg": "mbuf" | "mbuf_cluster", "item": id,
    #: "history": ["cpu0 alloc mbuf_packet at step 3", ...] oldest first}
    histories: list[dict[str, Any]] = field(default_factory=list)

    @property
    def items_accounted(self) -> int:
        """Items whose place is known: every item but the lost ones (items set aside as in
        a killed CPU's hands are accounted for: that is where they are)."""
        return self.mbufs + self.clusters - self.lost_mbufs - self.lost_clusters

    @property
    def ok(self) -> bool:
        return not (self.lost_mbufs or self.lost_clusters or self.double_owned or self.counter_drift
                    or self.refcount_errors)

    def set_aside(self, cpus: Sequence[int], per_cpu: int) -> None:
        """Move what CPUs ``cpus``, killed mid-operation, may have held out of the
        findings: per kind (lost mbufs, lost clusters, double-owned items, refcount
        errors, counter drift) at most ``per_cpu`` for each killed CPU; the rest stays a
        finding.  Call once, after the walk."""
        cpus = sorted(set(int(c) for c in cpus))
        if not cpus or self.in_killed_hands:
            return
        room = per_cpu * len(cpus)
        taken: dict[str, Any] = {"cpus": cpus, "per_cpu": per_cpu}
        for kind, attr in (("mbufs", "lost_mbufs"), ("clusters", "lost_clusters"),
                           ("double_owned", "double_owned"), ("refcount_errors", "refcount_errors"),
                           ("counter_drift", "counter_drift")):
            n = min(int(getattr(self, attr)), room)
            taken[kind] = n
            setattr(self, attr, int(getattr(self, attr)) - n)
        if not self.lost_mbufs:
            self.lost_mbuf_ids = []
        if not self.lost_clusters:
            self.lost_cluster_ids, self.lost_cluster_refcounts = [], []
        if not self.double_owned:
            self.double_owned_examples = []
        gone = {("lost", "mbuf")} if not self.lost_mbufs else set()
        gone |= {("lost", "mbuf_cluster")} if not self.lost_clusters else set()
        gone |= {("double-owned", "mbuf"), ("double-owned", "mbuf_cluster")} if not self.double_owned else set()
        self.histories = [h for h in self.histories if (h["finding"], h["keg"]) not in gone]
        self.in_killed_hands = taken

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["items_accounted"] = self.items_accounted
        d["ok"] = self.ok
        return d

    def summary_lines(self) -> list[str]:
        """A few lines for a person."""
        out = [f"audit: {self.mbufs} mbufs and {self.clusters} clusters walked, "
               f"{self.items_accounted} accounted for"]
        out.append(f"  free in keg: {self.mbufs_free_in_keg} mbufs, {self.clusters_free_in_keg} clusters; "
                   f"held by consumers: {self.mbufs_held} mbufs, {self.clusters_in_use} clusters")
        for zname, c in self.cached.items():
            out.append(f"  cached in {zname}: {c['percpu']} in per-CPU buckets, {c['list']} on the zone list")
        out.append(f"  stranded: {self.clusters_stranded} clusters held by cached packets (pseudo-leak)")
        out.append(f"  LOST: {self.lost_clusters} clusters, {self.lost_mbufs} mbufs (true leak)"
                   + (f"; e.g. clusters {self.lost_cluster_ids[:5]} with refcounts "
                      f"{self.lost_cluster_refcounts[:5]}" if self.lost_clusters else ""))
        hands = self.in_killed_hands
        if hands:
            cpus = ", ".join(str(c) for c in hands["cpus"])
            out.append(f"  in the hands of killed CPU{'s' if len(hands['cpus']) > 1 else ''} {cpus} (not lost: "
                       f"what a CPU killed mid-operation may hold, at most {hands['per_cpu']} of each per CPU): "
                       f"{hands['mbufs']} mbufs, {hands['clusters']} clusters, {hands['double_owned']} double-owned, "
                       f"{hands['refcount_errors']} refcount errors, counter drift {hands['counter_drift']}")
        if self.double_owned:
            out.append(f"  DOUBLE-OWNED: {self.double_owned} items, e.g. {self.double_owned_examples[:3]}")
        if self.refcount_errors:
            out.append(f"  refcount errors: {self.refcount_errors}")
        if self.counter_drift:
            out.append(f"  COUNTER DRIFT: {self.counters}")
        out += history_lines(self.histories)
        return out


def history_lines(histories: list[dict[str, Any]]) -> list[str]:
    """``  history of mbuf_cluster 17 (lost): cpu0 alloc ...; cpu1 refcount-dec ...`` per item;
    the run.json audit block's ``item_histories`` read the same way (stress/output)."""
    return [f"  history of {h['keg']} {h['item']} ({h['finding']}): "
            + ("; ".join(h["history"]) or "nothing recorded") for h in histories]


def _keg_free_items(np_of: Any, k: int, ipers: int) -> np.ndarray[Any, Any]:
    fc = np_of(f"k{k}_us_freecount")
    ff = np_of(f"k{k}_us_firstfree")
    nxt = np_of(f"k{k}_ui_next")
    lst = np_of(f"k{k}_us_list")
    out: list[int] = []
    for s in np.nonzero((fc > 0) & (lst != 3))[0]:
        item = int(ff[s])
        guard = ipers
        while item >= 0 and guard:
            out.append(item)
            item = int(nxt[item])
            guard -= 1
    return np.asarray(out, dtype=np.int64)


def audit(np_of: Any, rows: int, stats: Stats, held_mbufs: Iterable[int]) -> AuditReport:
    """Walk the arena (see the module docstring).  ``np_of(name)`` gives numpy views."""
    r = AuditReport()
    ub_cnt = np_of("ub_cnt")
    ub_bucket = np_of("ub_bucket")
    ub_link = np_of("ub_link")
    uk_vmtop = np_of("uk_vmtop")
    npages = (len(np_of("k0_us_list")), len(np_of("k1_us_list")))
    ipers = (MBUF_IPERS, CLUSTER_IPERS)
    live = []  # item mask: pages held by the keg
    for k in range(2):
        mask = np.ones(npages[k], dtype=bool)
        mask[np_of(f"k{k}_uk_vmstack")[: int(uk_vmtop[k])]] = False
        live.append(np.repeat(mask, ipers[k]))
    r.mbufs, r.clusters = int(live[0].sum()), int(live[1].sum())
    owners = [np.zeros(len(live[0]), np.int32), np.zeros(len(live[1]), np.int32)]
    places: list[dict[int, str]] = [{}, {}]
    doubles: list[tuple[int, int]] = []  # (keg, item) of the first double-owned items

    def own(k: int, items: np.ndarray[Any, Any], where: str) -> None:
        if len(items) == 0:
            return
        np.add.at(owners[k], items, 1)
        if (owners[k][items] > 1).any():
            for it in items[owners[k][items] > 1][:_SAMPLE]:
                if len(doubles) < _SAMPLE and (k, int(it)) not in doubles:
                    doubles.append((k, int(it)))
                r.double_owned_examples.append(f"{('mbuf', 'cluster')[k]} {int(it)}: "
                                               f"{places[k].get(int(it), '?')} and {where}")
        if len(places[k]) < 100000:
            for it in items.tolist():
                places[k].setdefault(it, where)

    free = [_keg_free_items(np_of, 0, MBUF_IPERS), _keg_free_items(np_of, 1, CLUSTER_IPERS)]
    r.mbufs_free_in_keg, r.clusters_free_in_keg = len(free[0]), len(free[1])
    own(0, free[0], "keg")
    own(1, free[1], "keg")

    def bucket_items(b: int) -> np.ndarray[Any, Any]:
        return ub_bucket[b * BUCKET_MAX: b * BUCKET_MAX + int(ub_cnt[b])].astype(np.int64)

    packet_cached: list[np.ndarray[Any, Any]] = []
    packet_in_hand: list[np.ndarray[Any, Any]] = []

    def claim(z: int, items: np.ndarray[Any, Any], where: str, packets: list[np.ndarray[Any, Any]]) -> int:
        """Zone z's items found at ``where``: owned there (a packet's cluster is looked up later
        through ``packets``); returns how many."""
        own(ZONE_KEG[z], items, f"{ZONE_NAMES[z]} {where}")
        if z == ZONE_PACKET:
            packets.append(items)
        return len(items)

    for z in range(NZONES):
        zname = ZONE_NAMES[z]
        percpu = listed = hand = 0
        for arr in ("uc_allocbucket", "uc_freebucket"):
            for row in range(rows):
                b = int(np_of(arr)[z * rows + row])
                if b >= 0:
                    percpu += claim(z, bucket_items(b), f"cpu{row} {arr[3:]}", packet_cached)
        b = int(np_of("uz_full_head")[z])
        guard = len(ub_cnt)
        while b >= 0 and guard:
            listed += claim(z, bucket_items(b), "full list", packet_cached)
            b = int(ub_link[b])
            guard -= 1
        for row in range(rows):
            b = int(np_of("uc_fillbucket")[z * rows + row])
            if b >= 0:
                hand += claim(z, bucket_items(b), f"cpu{row} in hand", packet_in_hand)
            it = int(np_of("uc_initem")[z * rows + row])
            if it >= 0:
                hand += claim(z, np.asarray([it], np.int64), f"cpu{row} init", packet_in_hand)
        r.cached[zname] = {"percpu": percpu, "list": listed}
        r.in_hand[zname] = hand

    held = np.unique(np.asarray(list(held_mbufs), dtype=np.int64))
    r.mbufs_held = len(held)
    own(0, held, "held by a consumer")

    # mbufs: lost = live, never seen
    lost_m = np.nonzero(live[0] & (owners[0] == 0))[0]
    r.lost_mbufs = len(lost_m)
    r.lost_mbuf_ids = lost_m[:_SAMPLE].tolist()
    dbl = int((owners[0] > 1).sum())

    # clusters: referenced by held mbufs, cached packets and in-hand packets
    m_ext = np_of("m_ext")
    m_exttype = np_of("m_exttype")
    cl_ref = np_of("cl_ref")

    def cat(xs: list[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
        return np.concatenate(xs) if xs else np.zeros(0, np.int64)

    def attached(mbufs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The clusters these mbufs carry (one per mbuf with a cluster, repeats kept)."""
        ext = m_ext[mbufs]
        return ext[ext >= 0].astype(np.int64)

    pc = cat(packet_cached)
    stranded = attached(pc)
    r.clusters_stranded = len(stranded)
    bad_pack = int(((m_exttype[pc] != EXT_PACKET) | (m_ext[pc] < 0)).sum()) if len(pc) else 0
    if len(stranded):
        bad_pack += int((cl_ref[stranded] != 1).sum())
    own(1, stranded, "attached to a cached packet")
    own(1, attached(cat(packet_in_hand)), "attached to an in-hand packet")
    uniq, counts = np.unique(attached(held), return_counts=True)
    r.clusters_in_use = len(uniq)
    own(1, uniq, "attached to a held mbuf")
    r.refcount_errors = bad_pack + int((cl_ref[uniq] != counts).sum()) if len(uniq) else bad_pack
    lost_c = np.nonzero(live[1] & (owners[1] == 0))[0]
    r.lost_clusters = len(lost_c)
    r.lost_cluster_ids = lost_c[:_SAMPLE].tolist()
    r.lost_cluster_refcounts = cl_ref[lost_c[:_SAMPLE]].tolist()
    dbl += int((owners[1] > 1).sum())
    r.double_owned = dbl

    # counters vs walk
    cached_m = sum(r.cached[ZONE_NAMES[z]]["percpu"] + r.cached[ZONE_NAMES[z]]["list"]
                   for z in range(NZONES) if ZONE_KEG[z] == 0)
    hand_m = sum(r.in_hand[ZONE_NAMES[z]] for z in range(NZONES) if ZONE_KEG[z] == 0)
    walk_m = r.mbufs - r.mbufs_free_in_keg - cached_m - hand_m
    cz = r.cached[ZONE_NAMES[ZONE_CLUSTER]]
    walk_c = r.clusters - r.clusters_free_in_keg - cz["percpu"] - cz["list"] - r.in_hand[ZONE_NAMES[ZONE_CLUSTER]]
    used_m = stats.zone("mbuf").used + stats.zone("mbuf_packet").used
    used_c = stats.zone("mbuf_cluster").used
    r.counters = {"mbufs_in_use": {"counters": used_m, "walk": walk_m},
                  "clusters_in_use": {"counters": used_c, "walk": walk_c}}
    r.counter_drift = abs(used_m - walk_m) + abs(used_c - walk_c)
    if has_history(np_of):
        ncpus = rows - 3  # Geometry.rows: the CPUs, the manager, the shared row, the off-CPU row
        found = [("lost", 1, int(c)) for c in lost_c[:HISTORY_ITEMS]]
        found += [("lost", 0, int(m)) for m in lost_m[:HISTORY_ITEMS]]
        found += [("double-owned", k, it) for k, it in doubles[:HISTORY_ITEMS]]
        r.histories = [{"finding": what, "keg": KEG_NAMES[k], "item": it,
                        "history": history_words(np_of, k, it, ncpus)} for what, k, it in found]
    return r
