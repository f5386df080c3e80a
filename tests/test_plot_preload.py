"""``results.preload_plot`` (P7): matplotlib imported in a thread during the run, and
``plot_run`` waiting for it, so the plot is drawn the same and no thread outlives it."""

from __future__ import annotations

import threading
from pathlib import Path

from stress.output import plots


def test_plot_run_waits_for_the_preload_and_leaves_no_thread(tmp_path: Path) -> None:
    plots.preload_plot()
    plots.preload_plot()  # a second call starts nothing new
    out = plots.plot_run(tmp_path)  # no samples: the panels say so, the png is still drawn
    assert out == tmp_path / plots.PLOT_PNG and out.stat().st_size > 0
    assert plots._PLOT_IMPORT is None
    assert not [t for t in threading.enumerate() if t.name == "preload-plot"]
