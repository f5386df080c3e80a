"""A single-process loop over the allocator's fast paths, for a sampling profiler.

Why: P1 and P2 (performance.md) are decided by a handful of lines in zone.py and
mbuf.py; a sampling profile of a tight loop shows which ones cost what, which
``python -m stress bench`` (ratios only) cannot.  Run it under py-spy, e.g.::

    py-spy record -r 2000 -f raw -o /tmp/fast.txt -- python benchmarks/fastpath_loop.py zone 5
    python benchmarks/fastpath_loop.py --report /tmp/fast.txt

``zone``: cpu.zalloc + cpu.zfree of the mbuf zone (P1); ``packet``: m_getcl + m_freem
(P2); ``floor``: the inline bucket pop/push both are compared with.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from itertools import repeat
from pathlib import Path

from allocator import M_PKTHDR, M_WAITOK, MT_DATA, ZONE_MBUF, Uma, UmaConfig


def loop(kind: str, seconds: float) -> int:
    """Run ``kind`` for about ``seconds``; returns the pairs done."""
    uma = Uma.create(UmaConfig(ncpus=2, nmbclusters=256))
    cpu = uma.cpu(0)
    zalloc, zfree, m_getcl, m_freem = cpu.zalloc, cpu.zfree, cpu.m_getcl, cpu.m_freem
    cnt, slots = uma.view("ub_cnt"), uma.view("ub_bucket")
    b = uma.geometry.nbuckets - 1
    base = b * (len(slots) // uma.geometry.nbuckets)
    z, how, mt, fl = ZONE_MBUF, M_WAITOK, MT_DATA, M_PKTHDR
    end = time.monotonic() + seconds
    done = 0
    while time.monotonic() < end:
        if kind == "zone":
            for _ in repeat(None, 10_000):
                zfree(z, zalloc(z, how))
        elif kind == "packet":
            for _ in repeat(None, 10_000):
                m_freem(m_getcl(how, mt, fl))
        else:
            for _ in repeat(None, 10_000):
                c = cnt[b]
                slots[base + c] = 7
                cnt[b] = c + 1
                c = cnt[b] - 1
                cnt[b] = c
                slots[base + c]  # noqa: B018
        done += 10_000
    cnt[b] = 0
    uma.close()
    return done


def report(raw: Path, top: int = 30) -> list[str]:
    """Self samples per function and per source line (with the line's text) from
    py-spy's raw output; start-up (import) samples are left out."""
    import linecache

    from stress.output.profile import read_collapsed

    funcs: Counter[str] = Counter()
    lines: Counter[tuple[str, int, str]] = Counter()
    total = 0
    for _pid, frames, n in read_collapsed(raw.read_text().splitlines()):
        if not frames or any(f.startswith("<module>") and "frozen" in f for f in frames):
            continue
        name, _, where = frames[-1].partition(" (")
        file, _, line = where.rstrip(")").rpartition(":")
        if file.startswith("<frozen") or not line.isdigit():
            continue
        total += n
        funcs[name.rsplit(".", 1)[-1]] += n
        lines[(file, int(line), name.rsplit(".", 1)[-1])] += n
    out = ["self time by function:"]
    out += [f"{100 * n / total:5.1f}%  {fn}" for fn, n in funcs.most_common()]
    out.append("self time by line:")
    for (file, lineno, fn), n in lines.most_common(top):
        text = linecache.getline(str(Path(__file__).resolve().parent.parent / file), lineno).strip()
        out.append(f"{100 * n / total:5.1f}%  {file}:{lineno} {fn}: {text}")
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        print("\n".join(report(Path(sys.argv[2]))))
    else:
        kind = sys.argv[1] if len(sys.argv) > 1 else "zone"
        secs = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
        print(f"{kind}: {loop(kind, secs)} pairs")
