#!/bin/sh
# Regenerates results/reference/policies/: one `python -m stress compare` per workload
# shape, the default variants (--era 2005, --era 2007, --era modern with each policy),
# compared with modern:none pair by pair (same seeds), at least 6 repeats (fewer can call
# no difference) and more, up to MAX_REPEAT, until every key figure's 95% interval is
# within +-5% of its median.  Then target.py judges median's goal on the result.
# Run from anywhere:  sh results/reference/policies/regenerate.sh
# Takes 55 to 75 minutes on the 2-core machine (6 to 8 repeats; MAX_REPEAT=6 for the
# lower bound).  The run folders go to a temporary directory (printed at the end); only
# compare.json / compare.txt / compare.png, and target.txt, are kept here.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/zonelimit-policies.XXXXXX")
MAX_REPEAT=${MAX_REPEAT:-8}
COMMON="--cpus 2 --nmbclusters 2048 --repeat 6 --precision 5% --max-repeat $MAX_REPEAT --seed 1 -q"
cd "$ROOT"
run() {  # shape, then compare options
    shape=$1; shift
    "$PY" -m stress compare $COMMON --out "$TMP/$shape" "$@"
    mkdir -p "$HERE/$shape"
    cp "$TMP/$shape/compare.json" "$TMP/$shape/compare.txt" "$TMP/$shape/compare.png" "$HERE/$shape/"
}
run steady      --workload netperf --duration 10 --baseline modern:none
run rounds      --workload netperf --rounds 2 --round-length 3 --idle 3 --baseline modern:none
run burst       --workload burst --duration 10 --baseline modern:none
run netperf-nfs --workload netperf-nfs --duration 8 --baseline modern:none
# fairness check: every policy allowed to flush per-CPU buckets (their percpu=1), as median does
PERCPU="--configs modern:exhaustion,modern:watermark,modern:depot,modern:wss,modern:wss-2019,modern:median
  --policy-param exhaustion.percpu=1 --policy-param watermark.percpu=1
  --policy-param depot.percpu=1 --policy-param wss.percpu=1 --policy-param wss-2019.percpu=1"
run rounds-percpu --workload netperf --rounds 2 --round-length 3 --idle 3 $PERCPU
run burst-percpu  --workload burst --duration 10 $PERCPU
"$PY" "$HERE/target.py" "$HERE"/steady "$HERE"/rounds "$HERE"/burst "$HERE"/netperf-nfs \
    "$HERE"/rounds-percpu "$HERE"/burst-percpu | tee "$HERE/target.txt"
echo "run folders: $TMP"
