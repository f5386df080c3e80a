"""zonelimit's tester, in layers; data flows one way (docs/architecture.md)::

    commands   cli.py, commands/     argv -> a RunConfig -> the engine; prints; the exit code
    engine     engine/               runs a run, returns a RunOutcome (prints nothing)
    workloads  workloads/            what each simulated CPU runs; the rings it keeps mbufs in
    output     output/               lines, tables, plots, profiles for a person
    documents  documents.py          every result document: named, written, read, checked
               samples.py            samples.csv, netstat.txt
    base       config.py options.py  RunConfig; value checkers and exit codes;
               cpulist.py audit.py   CPU lists; verdict rules;
               process.py            whether a pid is a live process;
               outcome.py            RunOutcome
    -> allocator/ (the system under test; it never imports stress)

A module imports its own layer and the layers below it (tests/test_layers.py).
"""
