"""Padding of per-CPU data (allocator/layout.py ``padded``): what different CPUs write on
every operation never shares a cache line, and the strided views index like packed ones."""

from __future__ import annotations

from allocator import Uma, UmaConfig
from allocator.layout import CACHE_LINE, ITEMSIZE, Geometry, Layout

PER_OP = ("uc_allocs", "uc_frees", "uc_allocbucket", "uc_freebucket", "cpu_ops", "ub_cnt")


def test_per_cpu_rows_and_bucket_counts_each_own_a_cache_line():
    lay = Layout(Geometry.for_config(2, 256))
    for name in PER_OP:
        off, spec = lay.offsets[name]
        lines = {(off + i * spec.stride * ITEMSIZE[spec.typecode]) // CACHE_LINE for i in range(spec.length)}
        assert len(lines) == spec.length, name  # no two elements on one line
    # and the arena stays within the P8 budget
    big = Layout(Geometry.for_config(2, 25600))
    assert big.size / big.payload_bytes <= 1.10


def test_padded_views_index_like_packed_arrays():
    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=64))
    try:
        off, spec = uma.arena.layout.offsets["uc_allocs"]
        v = uma.view("uc_allocs")
        assert len(v) == spec.length and spec.stride > 1
        v[3] = 12345
        raw = memoryview(uma.arena.mm)[off:off + spec.nbytes].cast("q")
        assert raw[3 * spec.stride] == 12345 and raw[3] == 0  # element 3 lives on its own line
        assert int(uma.arena.np("uc_allocs")[3]) == 12345
        raw.release()
        v[3] = 0
    finally:
        uma.close()
