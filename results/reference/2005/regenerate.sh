#!/bin/sh
# Regenerate results/reference/2005/ (about 1.5 minutes on a 2-core machine).
# Run from the project's root with the project's Python on PATH (or PYTHON=.venv/bin/python).
set -e
PY=${PYTHON:-python}
cd "$(dirname "$0")/../../.."
rm -rf results/reference/2005/run results/reference/2005/run-compiled results/reference/2005/atomic \
    results/reference/2005/atomic-nfs
# 1. the incident: refcount race + no trimming, netperf rounds until the wedge (exit 1); interpreted:
#    the race window of the interpreted allocator (hundreds of ns) wedges it within a minute
ZONELIMIT_PURE=1 $PY -m stress --cpus 2 --era 2005 --rounds 30 --round-length 2 --idle 1 --seed 1 \
    --out results/reference/2005/run || test $? -eq 1
# 1c. the same compiled (if built): kernel-sized windows, a leak that does not wedge in 90 s (exit 1)
$PY -m stress --cpus 2 --era 2005 --rounds 30 --round-length 2 --idle 1 --seed 1 \
    --out results/reference/2005/run-compiled || test $? -eq 1
# 2. the pseudo-leak alone: refcount fixed, the packet cache climbs to peak demand and levels off (exit 0)
$PY -m stress --cpus 2 --era 2005 --refcount atomic --rounds 6 --round-length 2 --idle 1 --seed 1 \
    --out results/reference/2005/atomic
# 3. the pseudo-leak starving an NFS phase that follows a stream (exit 1, wedged)
$PY -m stress --cpus 2 --era 2005 --refcount atomic --workload netperf-nfs --rounds 6 --round-length 2 \
    --idle 1 --seed 1 --out results/reference/2005/atomic-nfs || test $? -eq 1
