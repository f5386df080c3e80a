"""The project's own goal for `median`, judged on reference comparisons (not by the tool).

docs/policies.md: `median` should strand fewer clusters than every other policy, keep
throughput within 5% of `none`, and never wedge.  That is this project's question, not
a user's, so `compare` does not print it; this script asks it of the comparisons that
results/reference/policies/regenerate.sh makes, with compare's own statistics
(stress/stats.py: paired by seed, 95% bootstrap intervals, Wilcoxon signed-rank):

- stranding: `modern:median` against every other variant, pair by pair, on stranded
  clusters (avg): "met" only where median is called better, "MISSED" where it is called
  worse, else "open"; variants with the 2005 refcount race are left out (their clusters
  leak: a true leak, not stranding);
- throughput: the paired ratio median / `modern:none` and its interval, with at least 6
  pairs: "met" when the whole interval is at or above 0.95, "MISSED" when the whole
  interval is below, else "open";
- wedges: none in any run of `modern:median`.

    python results/reference/policies/target.py results/reference/policies/*/

Exit 0 whatever the verdict (a reading, not a test); 2 when a folder is not a comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from stress import stats
from stress.documents import DocumentError, read_compare
from stress.output.comparison import paired_values

MEDIAN, NONE = "modern:median", "modern:none"


def judge(doc: dict[str, Any]) -> list[str]:
    """The three checks on one comparison, one line each (and one per stranding pair)."""
    by = {v["name"]: v for v in doc["variants"]}
    med = by.get(MEDIAN)
    if med is None:
        return [f"not judged: no variant {MEDIAN}"]
    base = doc.get("base") or {}
    lines = []
    for v in doc["variants"]:
        if v is med:
            continue
        if {**base, **v.get("config", {})}.get("refcount") == "buggy-eq0":
            lines.append(f"n/a     stranded avg vs {v['name']}: its clusters leak (refcount race), not compared")
            continue
        c = stats.paired_comparison(paired_values(v["runs"], med["runs"], "stranded_avg"), "lower")
        mark = "met" if c.verdict == stats.BETTER else "MISSED" if c.verdict == stats.WORSE else "open"
        ci = "-" if c.low is None else f"[{c.low:.3g}, {c.high:.3g}]"
        lines.append(f"{mark:<7} stranded avg vs {v['name']}: median/{v['name']} {c.estimate:.3g} {ci}, "
                     f"p {c.p if c.p is None else round(c.p, 3)}: {c.verdict}")
    if NONE in by:
        c = stats.paired_comparison(paired_values(by[NONE]["runs"], med["runs"], "ops_per_s"), "higher")
        if c.low is None or c.high is None or c.kind != "ratio" or c.n < stats.MIN_PAIRS:
            lines.append(f"open    throughput vs {NONE}: {c.estimate:.3f}x, not decided ({c.n} pairs; {c.why})")
        else:
            mark = "met" if c.low >= 0.95 else "MISSED" if c.high < 0.95 else "open"
            lines.append(f"{mark:<7} throughput {c.estimate:.3f}x of {NONE} [{c.low:.3f}, {c.high:.3f}] "
                         "(>= 0.95 asked of the whole interval)")
    wedged = sum(1 for r in med["runs"] if (r.get("figures") or {}).get("wedged"))
    lines.append(f"{'met' if wedged == 0 else 'MISSED':<7} median wedged in {wedged} of {len(med['runs'])} runs")
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for name in argv:
        try:
            doc = read_compare(Path(name))
        except DocumentError as exc:
            print(f"target.py: {exc}", file=sys.stderr)
            return 2
        print(f"== {Path(name).name}: {doc.get('repeats', len(doc['variants'][0]['runs']))} repeats")
        for line in judge(doc):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
