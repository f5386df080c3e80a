"""Arena snapshots: every array of an arena in one compressed file, and back.

A wedged or panicked run is over when its arena is gone; a snapshot keeps it, so that it
can be examined and audited again offline -- the way a FreeBSD crash dump is read with
kgdb after the machine has rebooted.  :func:`save` writes ``numpy.savez_compressed``:
every named array of the layout (the allocator's and the tester's: rings, slot arrays,
scheduler and watchdog arrays), as its logical elements (padded arrays without their
padding), plus the geometry and the tester's array specs, so that :func:`load` can
rebuild an arena of exactly that layout.  The payload bytes (mbuf data, cluster data)
are left out: they are most of the arena, the audit walks the metadata only, and a
workload's payload errors are counted in its own arrays already.

:func:`load` creates a fresh arena (a memfd, as a run's) and copies the arrays in:
everything that reads an arena -- ``Uma`` stats, audit, panics, sleepers, the rings --
reads the snapshot the same way.  The payload reads as zeros.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .arena import Arena
from .layout import LAYOUT_VERSION, ArraySpec, Geometry

SNAPSHOT_VERSION = 1  #: this file's own format
_META = "__zonelimit_snapshot__"  #: the key of the JSON metadata inside the .npz


def save(arena: Arena, path: str | os.PathLike[str]) -> Path:
    """Write every array of ``arena`` to ``path`` (compressed .npz), atomically: a
    temporary file renamed over ``path``, so a reader never sees half a snapshot."""
    g = arena.layout.geometry
    meta = {"snapshot": SNAPSHOT_VERSION, "layout": LAYOUT_VERSION,
            "geometry": [g.ncpus, g.nmbclusters, g.mbuf_pages, g.cluster_pages, g.nbuckets, g.history],
            "extra": [[s.name, s.typecode, s.length, s.stride] for s in arena.layout.extra]}
    arrays: dict[str, Any] = {name: np.array(arena.np(name)) for name in arena.layout.offsets}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def load(path: str | os.PathLike[str]) -> Arena:
    """An arena rebuilt from a snapshot (close it when done).  ValueError, one line, for
    a file that is not a snapshot of this layout version."""
    try:
        npz_file = np.load(Path(path), allow_pickle=False)
    except ValueError as exc:  # not an .npz (numpy reads other bytes as a pickle, which it refuses)
        raise ValueError(f"{path}: unreadable snapshot: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: unreadable snapshot: {exc}") from None
    if not isinstance(npz_file, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a zonelimit arena snapshot (a single array, not an .npz)")
    try:
        with npz_file as npz:
            if _META not in npz.files:
                raise ValueError(f"{path}: not a zonelimit arena snapshot")
            meta = json.loads(bytes(npz[_META]).decode())
            if meta.get("snapshot") != SNAPSHOT_VERSION or meta.get("layout") != LAYOUT_VERSION:
                raise ValueError(f"{path}: a snapshot of arena layout {meta.get('layout')} (format "
                                 f"{meta.get('snapshot')}); this version reads layout {LAYOUT_VERSION}")
            geometry = Geometry(*(int(x) for x in meta["geometry"]))  # 5 words before the item history
            extra = tuple(ArraySpec(str(n), str(tc), int(length), stride=int(stride))
                          for n, tc, length, stride in meta["extra"])
            arena = Arena.create(geometry, extra)
            try:
                for name in arena.layout.offsets:
                    if name not in npz.files:
                        raise ValueError(f"{path}: array {name} missing")
                    data = npz[name]
                    target = arena.np(name)
                    if data.shape != target.shape:
                        raise ValueError(f"{path}: array {name} has {data.shape[0]} elements, "
                                         f"the layout {target.shape[0]}")
                    target[:] = data
            except BaseException:
                arena.close()
                raise
            return arena
    except (OSError, KeyError, TypeError, json.JSONDecodeError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: unreadable snapshot: {exc}") from None
