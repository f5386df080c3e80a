"""stress/output/progress.py: drawn for a person only, runs done of the total, the current
run's time, an ETA; lines kept above it; no fork while it draws."""

from __future__ import annotations

import io
import re

from stress.output import progress as progress_module
from stress.output.progress import RunProgress, wanted


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_drawn_only_on_a_terminal_and_never_under_quiet() -> None:
    assert wanted(False, Terminal())
    assert not wanted(True, Terminal())
    assert not wanted(False, io.StringIO())  # a pipe, a file, CI


def test_a_disabled_bar_prints_only_the_lines() -> None:
    out = io.StringIO()
    with RunProgress(3, "runs", enabled=False, stream=out) as p:
        p.start("base seed 0")
        p.say("base seed 0: ok")
        p.done()
    assert out.getvalue() == "base seed 0: ok\n"
    quiet = io.StringIO()
    with RunProgress(3, enabled=False, stream=quiet, quiet_lines=True) as p:
        p.say("nothing")
    assert quiet.getvalue() == ""


def test_the_bar_shows_runs_done_the_current_run_and_an_eta() -> None:
    term = Terminal()
    with RunProgress(3, "runs", enabled=True, stream=term) as p:
        p.start("k1 seed 0")
        p.done()
        p.start("k1 seed 1")
        p.say("k1 seed 0: ok, 1,000 ops/s")
        p.plan(4)  # --precision asked for one more repeat
        text = plain(term.getvalue())
        assert p in progress_module._LIVE
    assert p not in progress_module._LIVE
    assert "k1 seed 1" in text and "1/3 runs" in text and "1/4 runs" in text
    assert re.search(r"run +\d+\.\d s", text) and "ETA" in text and "elapsed" in text
    assert "k1 seed 0: ok, 1,000 ops/s" in text


def test_eta_is_the_pace_so_far() -> None:
    assert progress_module.eta(30.0, 0, 6) == "-"
    assert progress_module.eta(30.0, 2, 6) == "0:01:00"
    assert progress_module.eta(4000.0, 1, 2) == "1:06:40"
    assert progress_module.eta(30.0, 6, 6) == "0:00:00"


def test_no_fork_while_the_bar_is_drawn() -> None:
    """The at-fork hook holds the bar's lock around a fork, so the refresh thread is
    never half-way through writing stdout when a worker is forked."""
    with RunProgress(2, enabled=True, stream=Terminal()) as p:
        progress_module._before_fork()
        try:
            assert p.lock.locked()
        finally:
            progress_module._after_fork_in_parent()
        assert not p.lock.locked()
