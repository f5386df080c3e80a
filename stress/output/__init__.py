"""What a person sees: lines, tables, plots and profiles, built from values and documents.

    monitor.py     the configuration line, the CPU map, the end-of-run summary, progress
    comparison.py  compare's figures, their summary over repeats, warnings, target, table
    plots.py       plot.png and compare.png (one layout rule)
    profile.py     py-spy recording and the LOCK_PROFILING table

Formatting functions return lists of lines and print nothing (pyperf's rule); the
commands print them.  Nothing here imports the engine or the workloads.
"""
