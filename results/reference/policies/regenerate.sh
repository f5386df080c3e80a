#!/bin/sh
# Regenerates results/reference/policies/: one `python -m stress compare` per workload
# shape, default configurations (--era 2005, --era 2007, --era modern with each policy),
# 3 repeats each.  Run from anywhere:  sh results/reference/policies/regenerate.sh
# Takes about 30 minutes on a 2-core machine.  The run folders go to a temporary
# directory (printed at the end); only compare.json / compare.txt / compare.png are kept.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/zonelimit-policies.XXXXXX")
COMMON="--cpus 2 --nmbclusters 2048 --repeat 3 --seed 1 -q"
cd "$ROOT"
run() {  # shape, then compare options
    shape=$1; shift
    "$PY" -m stress compare $COMMON --out "$TMP/$shape" "$@"
    mkdir -p "$HERE/$shape"
    cp "$TMP/$shape/compare.json" "$TMP/$shape/compare.txt" "$TMP/$shape/compare.png" "$HERE/$shape/"
}
run steady      --workload netperf --duration 10
run rounds      --workload netperf --rounds 2 --round-length 3 --idle 3
run burst       --workload burst --duration 10
run netperf-nfs --workload netperf-nfs --duration 8
# fairness check: every policy allowed to flush per-CPU buckets (their percpu=1), as median does
PERCPU="--configs modern:exhaustion,modern:watermark,modern:depot,modern:wss,modern:median
  --policy-param exhaustion.percpu=1 --policy-param watermark.percpu=1
  --policy-param depot.percpu=1 --policy-param wss.percpu=1"
run rounds-percpu --workload netperf --rounds 2 --round-length 3 --idle 3 $PERCPU
run burst-percpu  --workload burst --duration 10 $PERCPU
echo "run folders: $TMP"
