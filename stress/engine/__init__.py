"""The engine: runs a run and returns what happened; prints nothing.

    runner.py     execute(cfg, folder, echo): one run into its folder (the entry point)
    manager.py    Manager.run() -> RunOutcome: arena, workers, supervision, audit
    sampler.py    Sampler: samples.csv rows, peaks, netstat -m blocks
    worker.py     one simulated CPU's process: pinning, sched hooks, the workload loop
    watchdog.py   wedge detection and dead-worker diagnosis
    stopping.py   deferred signals; stopping and reaping every worker
    pinning.py    CPU k -> core k mod cores; workers die with the manager
    leases.py     per-host core leases: every run holds disjoint cores (fcntl-locked table)
    executor.py   many runs: RunRequest, the Executor protocol, LocalExecutor (one after the other)
    jobs.py       --jobs J: child runs on disjoint leased cores
    cluster.py    --cluster: runs as Dask tasks on worker hosts
    scaleout.py   which executor the options ask for
    sched/        controlled scheduling: pct, the schedule, the token, jitter, controller
    measure.py    the measurements behind ``bench`` (P1..P5, P8)
"""
