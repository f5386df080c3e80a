"""The arena layout: our uma_int.h.

The brief summary (after FreeBSD's sys/vm/uma_int.h)
====================================================

    zone ──> per-CPU caches ──> buckets ──> keg ──> slabs ──> items

A *zone* is the front end a consumer allocates from (``mbuf``, ``mbuf_cluster``,
``mbuf_packet``).  Each zone has, per CPU, an *alloc bucket* and a *free bucket*
touched only by that CPU's worker process, plus a list of full buckets and a list of
empty buckets shared by all CPUs under the zone lock.  A zone draws items from a
*keg*: the slab back end for one item size.  ``mbuf`` and ``mbuf_packet`` share the
mbuf keg (``mbuf_packet`` is a *secondary zone*); ``mbuf_cluster`` has its own keg.
In 2005 the zone lock *is* the keg lock, so the two mbuf zones contend on one lock.

Allocation order (uma_zalloc_arg, 2005):
  1. pop the CPU's alloc bucket; if empty and the free bucket has items, swap them;
  2. else, under the zone lock, put the empty alloc bucket on the zone's empty list
     and take a full bucket from the zone's full list;
  3. if none, grow ``uz_count`` by one (cap BUCKET_MAX) and fill a new bucket from
     the keg's slabs (at most ``ncpus`` fills at once per zone);
  4. failing all that, allocate one item straight from a slab.

Slabs.  An mbuf slab is one 4 KB page holding 15 items of 256 bytes (the slab header
lives on the page in FreeBSD, taking one item's room).  A cluster slab is one page
holding 2 items of 2 KB (header off the page).  Pages are logical here: the payload
bytes of the items are stored contiguously per keg, and the slab header fields are
the ``us_`` arrays below.  A keg owns at most ``uk_cappages`` pages (the arena is a
fixed size); its zone limit ``uk_maxpages`` is counted in pages, as in FreeBSD::

    keg "mbuf_cluster" (ipers 2)         page p  ─┬─ item 2p     (2048 B payload)
      uk_part_head ─> slab ─> slab ...            └─ item 2p+1   (2048 B payload)
      uk_free_head ─> slab ...           us_freecount[p], us_firstfree[p] ─> ui_next[...]
      uk_vmtop: pages never handed to the keg sit on the uk_vmstack

Everything the allocator knows lives in ONE shared-memory region (the arena) as a
struct of arrays: one flat array per field, indexed by keg, slab, item, bucket, zone
or (zone, CPU).  Every array is declared once, in :func:`allocator_arrays`, with its
UMA field prefix (``uk_`` keg, ``us_`` slab, ``ui_`` item, ``ub_`` bucket, ``uz_``
zone, ``uc_`` per-CPU cache, ``cpu_`` CPU state, ``m_`` mbuf header, ``cl_`` cluster)
and a one-line comment.  Per-CPU arrays have ``ncpus + 3`` rows: the CPUs, then a
row for the manager (which runs the trim "callout"), then a row for the shared
counters that the ``stats-unlocked`` injection bumps, then the *off-CPU* row: a
CPU-less context a worker may use for tester code that must not touch its own
per-CPU caches (a holder allocating single items straight from slabs).

Padding (:func:`padded`).  What one CPU writes on every operation -- its per-CPU rows
(``uc_*``, ``cpu_*``) and the count ``ub_cnt`` of the buckets it owns -- gets a cache
line per element, so two cores never write the same line (false sharing: +20-40 ns a
write on two cores, and the P3 scaling).  A padded array stores element i at i * stride;
``Arena.view``/``Arena.np`` return the strided view, so every user indexes it exactly as
a packed array and nothing outside this module and the arena knows about the padding.
The item slots ``ub_bucket`` need none: BUCKET_MAX int32 are 512 bytes, whole lines.

Arena picture (offsets grow downwards, each array 64-byte aligned)::

    +---------------------------+
    | hdr      int64[HDR_WORDS] |  magic, version, geometry, knobs, stop flag
    | keg arrays  (uk_*)        |  2 kegs
    | slab arrays (us_*)        |  per keg: cappages slabs
    | item arrays (ui_*, m_*,   |  per keg: cappages * ipers items
    |   cl_ref)                 |
    | bucket arrays (ub_*)      |  nbuckets buckets of BUCKET_MAX slots (ub_cnt padded)
    | zone arrays (uz_*)        |  3 zones
    | per-CPU arrays (uc_*,cpu_)|  (zones x) rows, padded: one 64-byte line per row
    | lock owner words, panics  |
    | item history (ui_hist*)   |  INVARIANTS only: HISTORY_DEPTH words per item
    | extra arrays (tester's)   |  rings, held lists, schedule (declared by stress/)
    | mbuf payload   256 B each |
    | cluster payload 2 KB each |
    +---------------------------+
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- FreeBSD constants (sys/sys/param.h, sys/vm/uma_int.h) -------------------------
PAGE_SIZE = 4096
MSIZE = 256  #: bytes per mbuf
MCLBYTES = 2048  #: bytes per cluster
BUCKET_MAX = 128  #: largest bucket (uma_int.h BUCKET_MAX)
BUCKET_SIZES = (16, 32, 64, 128)  #: the bucket zones of uma_core.c
MBUF_IPERS = 15  #: 256 B items per 4 KB page, slab header on the page
CLUSTER_IPERS = 2  #: 2 KB items per page, header off the page (UMA_ZONE_OFFPAGE)

# kegs and zones
KEG_MBUF = 0
KEG_CLUSTER = 1
NKEGS = 2
ZONE_MBUF = 0
ZONE_CLUSTER = 1
ZONE_PACKET = 2
NZONES = 3
ZONE_NAMES = ("mbuf", "mbuf_cluster", "mbuf_packet")
ZONE_SIZES = (MSIZE, MCLBYTES, MSIZE)
ZONE_KEG = (KEG_MBUF, KEG_CLUSTER, KEG_MBUF)  #: the packet zone is secondary on the mbuf keg
KEG_NAMES = ("mbuf", "mbuf_cluster")

# keg flags (uk_flags)
UMA_ZFLAG_FULL = 1  #: the keg reached uk_maxpages; frees bypass the caches

# wait channels (cpu_wchan)
WCHAN_NONE = 0
WCHAN_ZONELIMIT = 1
WCHAN_NAMES = {WCHAN_NONE: "", WCHAN_ZONELIMIT: "zonelimit"}

# header words (hdr)
HDR_MAGIC = 0
HDR_VERSION = 1
HDR_PID = 2
HDR_NCPUS = 3
HDR_NMBCLUSTERS = 4
HDR_MBUF_PAGES = 5
HDR_CLUSTER_PAGES = 6
HDR_NBUCKETS = 7
HDR_KNOBS = 8
HDR_STOP = 9
HDR_PANICS = 10  #: number of panic records written
HDR_NEXTRA = 11  #: number of extra (tester) arrays
HDR_SEQ = 12  #: generic sequence word (trim interval counter)
HDR_PAGE_BUDGET = 13  #: pages the VM may give the kegs (0: no budget, no page shortage ever)
HDR_HISTORY = 14  #: operations kept per item (INVARIANTS item history; 0: none, no arrays)
HDR_WORDS = 16
MAGIC = 0x5A4F4E454C494D54  # "ZONELIMT"
LAYOUT_VERSION = 3  # 2: per-CPU rows and ub_cnt padded; 3: working-set state (issue 9)

# knobs bits (hdr[HDR_KNOBS])
KNOB_REFCOUNT_ATOMIC = 1
KNOB_WAKEUP_ALL = 2
KNOB_INVARIANTS = 4
KNOB_NO_BUCKETS = 8
KNOB_EXHAUSTION_DRAIN = 16

# item history (INVARIANTS only; allocator/history.py decodes it): the last HISTORY_DEPTH
# operations on every mbuf and cluster, one int64 word each:
#   bits 0-9 row + 1 (0: empty slot) | 10-13 HOP_* | 14-15 zone (3: none) | 16 the step is
#   a schedule step (else the row's own operation count) | 17-62 the step
HISTORY_DEPTH = 8  #: operations kept per item under INVARIANTS
HOP_ALLOC = 1  #: handed to a consumer (uma_zalloc_arg; a packet's cluster with its mbuf)
HOP_FREE = 2  #: returned by a consumer (uma_zfree_arg; a packet's cluster with its mbuf)
HOP_REF_INC = 3  #: cluster refcount + 1 (m_copym's mb_dupcl)
HOP_REF_DEC = 4  #: cluster refcount - 1 (mb_free_ext's fetchadd)
HOP_NAMES = {HOP_ALLOC: "alloc", HOP_FREE: "free", HOP_REF_INC: "refcount-inc", HOP_REF_DEC: "refcount-dec"}
HIST_ROW_BITS = 10  #: rows up to 1022 (MAX_CPUS 256 + 3)
HIST_OP_SHIFT = 10
HIST_ZONE_SHIFT = 14
HIST_NO_ZONE = 3
HIST_SCHED = 1 << 16  #: the step is the schedule's (a pct / replay step), not the row's own count
HIST_STEP_SHIFT = 17

# item states (ui_state, maintained in INVARIANTS mode only)
ITEM_FREE = 0  #: in a keg slab or a zone cache: poisoned
ITEM_USED = 1  #: handed to a consumer

# mbuf header (sys/sys/mbuf.h)
EXT_NONE = 0
EXT_CLUSTER = 1
EXT_PACKET = 6  # the value in sys/sys/mbuf.h of 2005
M_EXT = 0x0001
M_PKTHDR = 0x0002
MT_DATA = 1
MT_HEADER = 2

# panic records (INVARIANTS and allocator assertions)
PANIC_WORDS = 6  #: kind, zone, item, cpu, other, reserved
MAX_PANICS = 64
PANIC_DUP_FREE = 1
PANIC_DUP_ALLOC = 2
PANIC_MODIFIED_AFTER_FREE = 3
PANIC_BAD_DTOR = 4
PANIC_EMPTY_BUCKET = 5
PANIC_NAMES = {
    PANIC_DUP_FREE: "Duplicate free",
    PANIC_DUP_ALLOC: "Duplicate alloc",
    PANIC_MODIFIED_AFTER_FREE: "Memory modified after free",
    PANIC_BAD_DTOR: "Bad packet in dtor",
    PANIC_EMPTY_BUCKET: "Empty bucket on the full list",
}

# locks (lock_owner words); refcount stripes follow
LOCK_KEG_MBUF = 0
LOCK_KEG_CLUSTER = 1
LOCK_BUCKET = 2  #: the bucket zones' lock (bucket_alloc / bucket_free)
NREF_STRIPES = 64  #: striped locks for cluster refcount fetchadd
NLOCKS = 3 + NREF_STRIPES
LOCK_NAMES = ("mbuf keg", "mbuf_cluster keg", "bucket zone") + tuple(
    f"refcnt stripe {i}" for i in range(NREF_STRIPES))

LOCK_POINTS_MAX = 16  #: acquisition points per lock (allocator.lock.POINTS)
LP_NFIELDS = 6  #: LOCK_PROFILING fields (allocator.lock.LP_FIELDS)

POISON = bytes.fromhex("deadc0de")  #: 0xdeadc0de, FreeBSD's uma_junk


@dataclass(frozen=True)
class ArraySpec:
    """One array of the arena: name (with its UMA prefix), typecode, length, comment,
    and ``stride``: storage elements per element (1 = packed; a padded array stores
    element i at storage index i * stride, and Arena.view/np hand out the strided view,
    so users index it 0..length-1 as if it were packed)."""

    name: str
    typecode: str  # 'i' int32, 'q' int64, 'B' bytes
    length: int
    comment: str = ""
    stride: int = 1

    @property
    def nbytes(self) -> int:
        """Bytes the array occupies in the arena (padding included)."""
        return self.length * self.stride * ITEMSIZE[self.typecode]


ITEMSIZE = {"i": 4, "q": 8, "B": 1}
ALIGN = 64
CACHE_LINE = 64  #: bytes; what two cores must not both write for per-CPU data


def padded(name: str, typecode: str, length: int, comment: str) -> ArraySpec:
    """An array with one element per cache line: written by one CPU only (per-CPU rows,
    buckets), so two CPUs never write the same line (false sharing cost 20-40 ns per
    write on two cores here, and P3's scaling)."""
    return ArraySpec(name, typecode, length, comment, CACHE_LINE // ITEMSIZE[typecode])


@dataclass(frozen=True)
class Geometry:
    """The sizes every array length derives from (stored in the arena header)."""

    ncpus: int
    nmbclusters: int
    mbuf_pages: int
    cluster_pages: int
    nbuckets: int
    history: int = 0  #: operations kept per item (HDR_HISTORY): HISTORY_DEPTH under INVARIANTS, else 0

    @property
    def rows(self) -> int:
        """Per-CPU rows: CPUs, the manager, the shared-counter row, the off-CPU row."""
        return self.ncpus + 3

    @property
    def nmbufs(self) -> int:
        return self.mbuf_pages * MBUF_IPERS

    @property
    def nclusters(self) -> int:
        return self.cluster_pages * CLUSTER_IPERS

    @staticmethod
    def for_config(ncpus: int, nmbclusters: int, mbuf_factor: float = 2.0, history: int = 0) -> Geometry:
        """Size the arena: the cluster keg holds exactly its limit; the mbuf keg (no
        limit in 2005) gets ``mbuf_factor`` mbufs per cluster plus per-CPU slack; the
        bucket pool can hold every item in the smallest buckets plus every CPU's pair;
        ``history`` operations are kept per item (INVARIANTS; 0: no history arrays)."""
        cluster_pages = -(-nmbclusters // CLUSTER_IPERS)
        nmbufs = int(nmbclusters * mbuf_factor) + 256 * ncpus
        mbuf_pages = -(-nmbufs // MBUF_IPERS)
        items = mbuf_pages * MBUF_IPERS + cluster_pages * CLUSTER_IPERS
        nbuckets = items // BUCKET_SIZES[0] + 2 * NZONES * (ncpus + 2) + 64
        return Geometry(ncpus, nmbclusters, mbuf_pages, cluster_pages, nbuckets, history)


def allocator_arrays(g: Geometry) -> list[ArraySpec]:
    """Every allocator array, declared once.  Grep a name to find every use."""
    rows = g.rows
    zr = NZONES * rows
    a = [
        ArraySpec("hdr", "q", HDR_WORDS, "header: magic, geometry, knobs, stop flag"),
        # --- kegs -------------------------------------------------------------------
        ArraySpec("uk_pages", "i", NKEGS, "pages the keg holds (counted against the limit)"),
        ArraySpec("uk_maxpages", "i", NKEGS, "zone limit in pages; 0 = none"),
        ArraySpec("uk_cappages", "i", NKEGS, "pages the arena has room for"),
        ArraySpec("uk_free", "i", NKEGS, "free items in the keg's slabs"),
        ArraySpec("uk_flags", "i", NKEGS, "UMA_ZFLAG_FULL"),
        ArraySpec("uk_part_head", "i", NKEGS, "first partially free slab, -1 none"),
        ArraySpec("uk_free_head", "i", NKEGS, "first wholly free slab, -1 none"),
        ArraySpec("uk_vmtop", "i", NKEGS, "pages on uk_vmstack (not yet given to the keg)"),
        ArraySpec("uk_nsleep", "i", NKEGS, "CPUs asleep in zonelimit on this keg"),
        ArraySpec("uk_sleepq", "i", NKEGS * rows, "FIFO of sleeping CPUs per keg (wakeup_one order)"),
        ArraySpec("uk_sleeps", "q", NKEGS, "zonelimit sleeps, ever"),
        ArraySpec("uk_wakeups", "q", NKEGS, "wakeups sent, ever"),
    ]
    for k, npages, ipers in ((0, g.mbuf_pages, MBUF_IPERS), (1, g.cluster_pages, CLUSTER_IPERS)):
        p = f"k{k}_"
        a += [
            ArraySpec(p + "uk_vmstack", "i", npages, "stack of page numbers not held by the keg"),
            ArraySpec(p + "us_freecount", "i", npages, "free items in the slab"),
            ArraySpec(p + "us_firstfree", "i", npages, "head of the slab's free list (item), -1 none"),
            ArraySpec(p + "us_list", "i", npages, "0 none/full, 1 partial list, 2 free list, 3 VM"),
            ArraySpec(p + "us_prev", "i", npages, "previous slab on its keg list"),
            ArraySpec(p + "us_next", "i", npages, "next slab on its keg list"),
            ArraySpec(p + "ui_next", "i", npages * ipers, "slab free-list link per item"),
            ArraySpec(p + "ui_state", "i", npages * ipers, "INVARIANTS: ITEM_FREE / ITEM_USED"),
        ]
    nm = g.nmbufs
    a += [
        # --- mbuf headers (sys/sys/mbuf.h), one per mbuf-keg item -------------------
        ArraySpec("m_flags", "i", nm, "M_EXT | M_PKTHDR"),
        ArraySpec("m_type", "i", nm, "MT_DATA / MT_HEADER"),
        ArraySpec("m_next", "i", nm, "next mbuf of the chain, -1 none"),
        ArraySpec("m_len", "i", nm, "bytes of data"),
        ArraySpec("m_ext", "i", nm, "attached cluster (cluster-keg item), -1 none"),
        ArraySpec("m_exttype", "i", nm, "EXT_NONE / EXT_CLUSTER / EXT_PACKET"),
        # --- clusters ---------------------------------------------------------------
        ArraySpec("cl_ref", "i", g.nclusters, "reference count (UMA_ZONE_REFCNT storage)"),
        # --- buckets ----------------------------------------------------------------
        padded("ub_cnt", "i", g.nbuckets, "items in the bucket (its owner CPU writes it per op)"),
        ArraySpec("ub_entries", "i", g.nbuckets, "capacity: one of BUCKET_SIZES"),
        ArraySpec("ub_link", "i", g.nbuckets, "next bucket on its list, -1 end"),
        ArraySpec("ub_fresh", "i", g.nbuckets,
                  "1: filled from the keg for an allocation, on the full list until that CPU takes it"),
        ArraySpec("ub_bucket", "i", g.nbuckets * BUCKET_MAX, "item slots, BUCKET_MAX per bucket"),
        ArraySpec("ub_pool", "i", 2, "free bucket pool: head, count"),
        # --- zones ------------------------------------------------------------------
        ArraySpec("uz_count", "i", NZONES, "bucket size target (grows to BUCKET_MAX)"),
        ArraySpec("uz_full_head", "i", NZONES, "list of full buckets"),
        ArraySpec("uz_full_cnt", "i", NZONES, "buckets on the full list"),
        ArraySpec("uz_full_items", "i", NZONES, "items in the full-list buckets"),
        ArraySpec("uz_free_head", "i", NZONES, "list of empty buckets"),
        ArraySpec("uz_free_cnt", "i", NZONES, "buckets on the empty list"),
        ArraySpec("uz_fills", "i", NZONES, "bucket fills in progress (<= ncpus)"),
        ArraySpec("uz_count_min", "i", NZONES, "uz_count's floor for a reclaim's decrement (its initial value)"),
        # --- working-set state (allocator/workingset.py; zone lock) ---------------------
        ArraySpec("uz_imax", "q", NZONES, "this interval's allocation batch: max items (demand coordinates)"),
        ArraySpec("uz_bimin", "q", NZONES, "this interval's allocation batch: min seen by allocations"),
        ArraySpec("uz_swing", "q", NZONES, "largest imax - bimin of the batches closed this interval"),
        ArraySpec("uz_imin", "q", NZONES, "this interval's min of the list's items (demand coordinates)"),
        ArraySpec("uzd_nitems", "q", NZONES, "items on the full list, a bucket in transit to its CPU not counted"),
        ArraySpec("uzd_imax", "q", NZONES, "FreeBSD main: max item count this period (half kept across)"),
        ArraySpec("uzd_imin", "q", NZONES, "FreeBSD main: min item count this period"),
        ArraySpec("uzd_bimin", "q", NZONES, "FreeBSD main: min item count this allocation batch"),
        ArraySpec("uzd_wss", "q", NZONES, "FreeBSD main: working-set size estimate"),
        ArraySpec("uzd_limin", "q", NZONES, "FreeBSD main: long-term minimum item count"),
        ArraySpec("uzd_timin", "q", NZONES, "FreeBSD main: periods since limin last hit 0"),
        ArraySpec("uzd19_imax", "q", NZONES, "FreeBSD 2019: max item count this period"),
        ArraySpec("uzd19_imin", "q", NZONES, "FreeBSD 2019: min item count this period"),
        ArraySpec("uzd19_wss", "q", NZONES, "FreeBSD 2019: working-set size estimate"),
        ArraySpec("ml_total", "q", NZONES, "illumos depot: full magazines (buckets) on the list"),
        ArraySpec("ml_min", "q", NZONES, "illumos depot: min of ml_total this interval"),
        ArraySpec("ml_reaplimit", "q", NZONES, "illumos depot: the previous interval's ml_min"),
        ArraySpec("uz_nfill", "q", NZONES, "bucket fills from the keg, ever (cache misses)"),
        ArraySpec("uz_noverflow", "q", NZONES, "frees that went straight to the slab, ever"),
        ArraySpec("uz_ndrained", "q", NZONES, "items returned to the keg by drains and trims, ever"),
        ArraySpec("uz_nprefill", "q", NZONES, "items pre-filled by a policy, ever"),
        # --- per-CPU caches and counters (row = zone * rows + cpu), one line per row ----
        padded("uc_allocbucket", "i", zr, "the CPU's alloc bucket, -1 none"),
        padded("uc_freebucket", "i", zr, "the CPU's free bucket, -1 none"),
        padded("uc_fillbucket", "i", zr, "bucket being filled by this CPU (audit), -1 none"),
        padded("uc_initem", "i", zr, "item between keg and zone init on this CPU (audit), -1"),
        padded("uc_allocs", "q", zr, "consumer allocations"),
        padded("uc_frees", "q", zr, "consumer frees"),
        padded("uc_fails", "q", zr, "failed allocations"),
        padded("uc_sleeps", "q", zr, "zonelimit sleeps"),
        padded("uc_misses", "q", zr, "allocations not served by the per-CPU cache"),
        # --- CPUs (one line per row) ------------------------------------------------
        padded("cpu_pid", "i", rows, "pid of the process acting as this CPU"),
        padded("cpu_wchan", "i", rows, "wait channel: WCHAN_NONE / WCHAN_ZONELIMIT"),
        padded("cpu_wkeg", "i", rows, "keg slept on"),
        padded("cpu_wzone", "i", rows, "zone whose allocation slept"),
        padded("cpu_wsince", "q", rows, "CLOCK_MONOTONIC ns when the sleep began"),
        padded("cpu_woken", "i", rows, "set by wakeup under the keg lock"),
        padded("cpu_drainreq", "i", rows, "cross-CPU cache drain requests (generation)"),
        padded("cpu_drainmask", "i", rows, "zones to drain (bit per zone)"),
        padded("cpu_drained", "i", rows, "generation of the last request served"),
        padded("cpu_ops", "q", rows, "progress counter (consumer calls)"),
        # --- locks and panics -------------------------------------------------------
        ArraySpec("lock_owner", "i", NLOCKS, "row + 1 of the holder, 0 free"),
        ArraySpec("panics", "q", MAX_PANICS * PANIC_WORDS, "panic records"),
        ArraySpec("lockprof", "q", NLOCKS * LOCK_POINTS_MAX * LP_NFIELDS, "LOCK_PROFILING per (lock, point)"),
    ]
    if g.history:
        # --- INVARIANTS item history (debug.py records, history.py decodes): only then --
        for k, nitems in ((0, g.nmbufs), (1, g.nclusters)):
            p = f"k{k}_"
            a += [
                ArraySpec(p + "ui_hist", "q", nitems * g.history,
                          "INVARIANTS: the item's last `history` operations, a ring (HIST_* words)"),
                ArraySpec(p + "ui_histn", "i", nitems, "INVARIANTS: operations recorded on the item, ever"),
            ]
        a.append(padded("ui_histclock", "q", rows,
                        "INVARIANTS: operations the row recorded (the step when no schedule runs)"))
    return a


@dataclass
class Layout:
    """Offsets of every array in the arena, computed from the geometry."""

    geometry: Geometry
    extra: tuple[ArraySpec, ...] = ()
    offsets: dict[str, tuple[int, ArraySpec]] = field(default_factory=dict)
    mbuf_payload: int = 0
    cluster_payload: int = 0
    size: int = 0

    def __post_init__(self) -> None:
        off = 0
        for spec in allocator_arrays(self.geometry) + list(self.extra):
            off = -(-off // ALIGN) * ALIGN
            if spec.name in self.offsets:
                raise ValueError(f"arena array {spec.name} declared twice")
            self.offsets[spec.name] = (off, spec)
            off += spec.nbytes
        off = -(-off // PAGE_SIZE) * PAGE_SIZE
        self.mbuf_payload = off
        off += self.geometry.nmbufs * MSIZE
        self.cluster_payload = off
        off += self.geometry.nclusters * MCLBYTES
        self.size = off

    @property
    def metadata_bytes(self) -> int:
        return self.mbuf_payload

    @property
    def payload_bytes(self) -> int:
        return self.size - self.mbuf_payload


# Size asserts at import (the arena format depends on them).
assert ITEMSIZE["i"] == 4 and ITEMSIZE["q"] == 8
assert MBUF_IPERS * MSIZE <= PAGE_SIZE and CLUSTER_IPERS * MCLBYTES == PAGE_SIZE
assert BUCKET_SIZES[-1] == BUCKET_MAX
assert len(LOCK_NAMES) == NLOCKS
_g = Geometry.for_config(2, 25600)
_l = Layout(_g)
assert _l.size / _l.payload_bytes <= 1.10, "arena overhead above the P8 target"
del _g, _l
