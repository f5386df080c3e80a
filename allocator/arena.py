"""The arena: one shared-memory region holding all allocator state.

Why memfd: ``os.memfd_create`` gives an anonymous file with no /dev/shm name, so there
is nothing to unlink and nothing can leak: the kernel frees the memory when the last
mapping and descriptor go away, whichever way the processes end (SIGKILL included).
Workers inherit the ``MAP_SHARED`` mapping across ``fork``.  Any other process of the
same user can attach through ``/proc/<pid>/fd/<fd>`` while the creator lives (that is
how a second ``python -m stress`` can watch a live run).

Who sends what to whom::

    manager ── memfd_create + ftruncate + mmap(MAP_SHARED) ──> arena
       │  fork (mapping inherited)                           ▲
       ├──> worker 0 ── memoryview casts, slice moves ───────┤
       ├──> worker 1 ── ... ─────────────────────────────────┤
       └── observer: open(/proc/<manager>/fd/<n>) + mmap ────┘ (read mostly)
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import Any

import numpy as np

from .layout import (
    HDR_CLUSTER_PAGES,
    HDR_HISTORY,
    HDR_MAGIC,
    HDR_MBUF_PAGES,
    HDR_NBUCKETS,
    HDR_NCPUS,
    HDR_NEXTRA,
    HDR_NMBCLUSTERS,
    HDR_PID,
    HDR_VERSION,
    HDR_WORDS,
    LAYOUT_VERSION,
    MAGIC,
    ArraySpec,
    Geometry,
    Layout,
)

_NP = {"i": np.int32, "q": np.int64, "B": np.uint8}
# Extra (tester) array specs are stored after the layout so an observer can rebuild
# it: name (32 bytes), typecode (1 byte), stride, length (int64); one record per array,
# as many as the tester declares (their number is in the header: HDR_NEXTRA).  A fixed
# table of 64 once capped a run at 64 arrays, which netperf reached at 17 CPUs.
_EXTRA_REC = 48


def _close_quietly(fd: int) -> None:
    """Close an arena's memfd once; it may already be gone (a fork's copy, a closed fd)."""
    try:
        os.close(fd)
    except OSError:
        pass


class Arena:
    """A mapped arena with typed views of every array.

    ``view(name)`` returns a memoryview cast to the array's typecode (fast single
    element access); ``np(name)`` a numpy view over the same bytes (batch work).
    """

    def __init__(self, mm: mmap.mmap, layout: Layout, fd: int, owner: bool) -> None:
        self.mm = mm
        self.layout = layout
        self.fd = fd
        self.owner = owner
        self._buf = memoryview(mm)
        self._views: dict[str, memoryview] = {}
        self._nps: dict[str, np.ndarray[Any, Any]] = {}
        self.closed = False
        # An arena dropped without close() (a test's, a forgotten Uma) still closes its fd:
        # the mapping lives on in any view that outlives it, the descriptor need not.
        self._fd_closer = weakref.finalize(self, _close_quietly, fd)

    # --- creation and attachment ----------------------------------------------------
    @staticmethod
    def create(geometry: Geometry, extra: tuple[ArraySpec, ...] = ()) -> Arena:
        """Create a fresh arena (zero-filled) for ``geometry`` plus the tester's arrays."""
        layout = Layout(geometry, tuple(extra))
        meta = HDR_WORDS * 8 + len(extra) * _EXTRA_REC
        fd = os.memfd_create("zonelimit-arena", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, layout.size + meta)
            mm = mmap.mmap(fd, layout.size + meta, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        # The extra-spec table lives past the layout so the header stays at offset 0.
        arena = Arena(mm, layout, fd, owner=True)
        hdr = arena.view("hdr")
        hdr[HDR_MAGIC] = MAGIC
        hdr[HDR_VERSION] = LAYOUT_VERSION
        hdr[HDR_PID] = os.getpid()
        hdr[HDR_NCPUS] = geometry.ncpus
        hdr[HDR_NMBCLUSTERS] = geometry.nmbclusters
        hdr[HDR_MBUF_PAGES] = geometry.mbuf_pages
        hdr[HDR_CLUSTER_PAGES] = geometry.cluster_pages
        hdr[HDR_NBUCKETS] = geometry.nbuckets
        hdr[HDR_HISTORY] = geometry.history
        hdr[HDR_NEXTRA] = len(extra)
        for i, spec in enumerate(extra):
            off = layout.size + HDR_WORDS * 8 + i * _EXTRA_REC
            name = spec.name.encode()
            if len(name) > 32:
                raise ValueError(f"extra array name too long: {spec.name}")
            mm[off:off + 32] = name.ljust(32, b"\0")
            mm[off + 32:off + 33] = spec.typecode.encode()
            mm[off + 36:off + 40] = spec.stride.to_bytes(4, "little")
            mm[off + 40:off + 48] = spec.length.to_bytes(8, "little")
        return arena

    @staticmethod
    def attach(path: str, readonly: bool = False) -> Arena:
        """Attach to a live arena by path (``/proc/<pid>/fd/<n>``).  ``readonly`` maps it
        without write permission (an observer such as ``stress stat``): every view is
        read-only, so a write raises instead of changing the run."""
        fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        except BaseException:
            os.close(fd)
            raise
        hdr = memoryview(mm)[: HDR_WORDS * 8].cast("q")
        if hdr[HDR_MAGIC] != MAGIC or hdr[HDR_VERSION] != LAYOUT_VERSION:
            hdr.release()
            mm.close()
            os.close(fd)
            raise ValueError(f"{path} is not a zonelimit arena of layout version {LAYOUT_VERSION}")
        g = Geometry(int(hdr[HDR_NCPUS]), int(hdr[HDR_NMBCLUSTERS]), int(hdr[HDR_MBUF_PAGES]),
                     int(hdr[HDR_CLUSTER_PAGES]), int(hdr[HDR_NBUCKETS]), int(hdr[HDR_HISTORY]))
        nextra = int(hdr[HDR_NEXTRA])
        hdr.release()
        base = Layout(g).size  # without extras, to find the spec table we need the full size
        # The spec table sits after the full layout: size - meta.
        meta = HDR_WORDS * 8 + nextra * _EXTRA_REC
        table = size - meta + HDR_WORDS * 8
        extra = []
        for i in range(nextra):
            off = table + i * _EXTRA_REC
            name = bytes(mm[off:off + 32]).rstrip(b"\0").decode()
            tc = bytes(mm[off + 32:off + 33]).decode()
            stride = int.from_bytes(mm[off + 36:off + 40], "little") or 1
            length = int.from_bytes(mm[off + 40:off + 48], "little")
            extra.append(ArraySpec(name, tc, length, stride=stride))
        layout = Layout(g, tuple(extra))
        assert layout.size >= base and layout.size + meta == size, "arena size does not match its header"
        return Arena(mm, layout, fd, owner=False)

    @property
    def path(self) -> str:
        """A path another process can open to attach to this arena."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    # --- views ----------------------------------------------------------------------
    def view(self, name: str) -> memoryview:
        """memoryview of array ``name`` cast to its typecode (cached)."""
        v = self._views.get(name)
        if v is None:
            off, spec = self.layout.offsets[name]
            raw = self._buf[off:off + spec.nbytes]
            v = raw if spec.typecode == "B" else raw.cast(spec.typecode)  # type: ignore[call-overload]
            if spec.stride > 1:
                v = v[::spec.stride]  # a padded array: element i at storage i * stride
            self._views[name] = v
        return v

    def np(self, name: str) -> np.ndarray[Any, Any]:
        """numpy view of array ``name`` (np.frombuffer keeps the export visible)."""
        a = self._nps.get(name)
        if a is None:
            off, spec = self.layout.offsets[name]
            a = np.frombuffer(self.mm, dtype=_NP[spec.typecode], count=spec.length * spec.stride, offset=off)
            if spec.stride > 1:
                a = a[::spec.stride]
            self._nps[name] = a
        return a

    def payload(self, keg: int) -> memoryview:
        """The payload bytes of every item of ``keg`` (0 mbuf, 1 cluster)."""
        lay = self.layout
        if keg == 0:
            return self._buf[lay.mbuf_payload:lay.cluster_payload]
        return self._buf[lay.cluster_payload:lay.size]

    def payload_np(self, keg: int) -> Any:
        lay = self.layout
        if keg == 0:
            return np.frombuffer(self.mm, np.uint8, lay.cluster_payload - lay.mbuf_payload, lay.mbuf_payload)
        return np.frombuffer(self.mm, np.uint8, lay.size - lay.cluster_payload, lay.cluster_payload)

    def close(self) -> None:
        """Drop the views and unmap; idempotent.  Views handed out must be gone."""
        if self.closed:
            return
        self.closed = True
        for v in self._views.values():
            try:
                v.release()
            except BufferError:
                pass  # a compiled context still holds it; the mapping dies with the process
        self._views.clear()
        self._nps.clear()
        self._buf.release()
        try:
            self.mm.close()
        except BufferError:
            pass  # a numpy view is still alive somewhere; the mapping dies with the process
        self._fd_closer()
