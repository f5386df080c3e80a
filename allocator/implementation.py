"""Which implementation of the hot modules runs: compiled by Cython, or interpreted.

One source, two speeds (issue 15, docs/performance.md "Compiled mode").  The allocator's
hot modules (:data:`HOT_MODULES`) are plain Python.  When the package is built where a C
compiler exists, setup.py compiles each of them with Cython, under another name:
``allocator/zone.py`` becomes the extension module ``allocator._compiled.zone`` (a
compiled module named ``allocator.zone`` would shadow the .py file, and an editable
install could then never run the source).  The hot modules import each other relatively
(``from .keg import ...``), so the compiled ones import their compiled siblings, and
everything else absolutely (``from allocator.layout import ...``), so both modes share one
layout, one arena and one set of exception classes (tests/test_implementation.py holds
that rule).

Which runs: the compiled modules, unless

* ``ZONELIMIT_PURE=1`` is set in the environment when ``allocator`` is imported,
* they were not built (no C compiler at install time, or ``ZONELIMIT_BUILD_PURE=1``),
* they are stale: each compiled module carries the SHA-256 of the .py file it was built
  from, and a source edited since (an editable install) makes the whole set unusable
  until ``pip install -e .`` runs again (a warning says so).

:data:`COMPILED` is the process's choice, made once at import; ``allocator.COMPILED``
re-exports it and run.json records it.  :func:`cpu_class` hands ``Uma`` the CPU context
class of a mode; :func:`use` changes the process's mode (the differential test drives
both in one process; a test that needs interpreted race windows asks for them).

Memory ordering.  Interpreted code relies on x86's total store order (allocator/fastpath.py
says why that holds); compiled code uses explicit atomics (allocator/atomics.pxd) for
every word it touches that processes share without a lock: the FULL flag, refcounts and
drain requests (fastpath.pxd), the owner words (lock.pxd), the wait channel (limit.pxd).
docs/allocator.md "Memory ordering" lists them all, with the tester's schedule token and
rings, which are never compiled.  Until the interpreted mode's reliance is replaced,
other architectures are refused: :func:`check_architecture` (``Uma.create`` and
``Uma.attach`` call it).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allocator.cpu import Cpu

#: The modules compiled by the build (setup.py reads this tuple), in import order.
HOT_MODULES = ("lock", "context", "keg", "limit", "bucket", "workingset", "fastpath", "zone", "mbuf", "debug",
               "cpu")
PURE_ENV = "ZONELIMIT_PURE"  #: set to 1: run the interpreted modules even when compiled ones exist
BUILD_PURE_ENV = "ZONELIMIT_BUILD_PURE"  #: set to 1 at install time: build without compiling (setup.py)
SOURCE_HASH = "_SOURCE_SHA256"  #: the attribute the build appends to each compiled module
X86 = ("x86_64", "amd64", "i386", "i686")


class UnsupportedArchitecture(RuntimeError):
    """The allocator's interpreted memory ordering is only known to hold on x86 (TSO)."""


def check_architecture(machine: str | None = None) -> None:
    """Refuse a machine whose memory model is weaker than x86's (ARM, POWER, RISC-V):
    the interpreted hot modules and the tester's schedule token and rings rely on stores
    not being reordered with stores, nor loads with loads (docs/allocator.md)."""
    m = (machine if machine is not None else platform.machine()).lower()
    if m not in X86:
        raise UnsupportedArchitecture(
            f"zonelimit runs on x86 only (this machine is {m or 'unknown'}): its shared-memory protocols "
            "rely on x86's store ordering (docs/allocator.md, memory ordering)")


def source_hash(name: str, folder: Path | None = None) -> str:
    """SHA-256 of hot module ``name``'s .py source and of every .pxd beside it (its types,
    and atomics.pxd, which every typed module cimports): what the build records
    (setup.py ``source_hash``, the same rule), so an edit to a .pxd makes the compiled
    modules stale as an edit to the .py does."""
    here = folder if folder is not None else Path(__file__).parent
    digest = hashlib.sha256((here / f"{name}.py").read_bytes())
    for pxd in sorted(here.glob("*.pxd")):
        digest.update(pxd.name.encode() + b"\0" + pxd.read_bytes())
    return digest.hexdigest()


def _load_compiled() -> tuple[ModuleType | None, str]:
    """The compiled ``cpu`` module, or None and why not."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return None, f"{PURE_ENV}={os.environ[PURE_ENV]}"
    mods = []
    for name in HOT_MODULES:
        try:
            mods.append(importlib.import_module(f"allocator._compiled.{name}"))
        except ImportError:
            return None, "not built (no C compiler at install time?)"
    stale = [n for n, m in zip(HOT_MODULES, mods, strict=True) if getattr(m, SOURCE_HASH, None) != source_hash(n)]
    if stale:
        warnings.warn(f"zonelimit: the compiled allocator is older than allocator/{stale[0]}.py; running "
                      "interpreted (rebuild: pip install -e .)", RuntimeWarning, stacklevel=2)
        return None, f"stale ({', '.join(stale)} changed since the build)"
    return mods[-1], ""


_compiled_cpu, WHY_INTERPRETED = _load_compiled()
#: True when the compiled modules are available and chosen (see the module docstring).
COMPILED: bool = _compiled_cpu is not None


def cpu_class(compiled: bool | None = None) -> type[Cpu]:
    """The CPU context class of a mode (None: the process's mode, :data:`COMPILED`)."""
    if compiled is None:
        compiled = COMPILED
    if compiled:
        mod = _compiled_cpu
        if mod is None:
            mod = _compiled_anyway()
        return mod.Cpu  # type: ignore[no-any-return, unused-ignore]
    from allocator.cpu import Cpu

    return Cpu


def _compiled_anyway() -> ModuleType:
    """The compiled modules when ZONELIMIT_PURE chose interpreted (a test asks for both)."""
    try:
        mod = importlib.import_module("allocator._compiled.cpu")
    except ImportError as e:
        raise RuntimeError(f"the compiled allocator is not available: {WHY_INTERPRETED}") from e
    return mod


def compiled_available() -> bool:
    """Whether the compiled modules exist and match their sources (whatever the mode)."""
    if COMPILED:
        return True
    try:
        mods = [importlib.import_module(f"allocator._compiled.{n}") for n in HOT_MODULES]
    except ImportError:
        return False
    return all(getattr(m, SOURCE_HASH, None) == source_hash(n) for n, m in zip(HOT_MODULES, mods, strict=True))


def use(compiled: bool) -> bool:
    """Make ``compiled`` the process's mode (for ``Uma.create`` from now on, and for the
    workers it forks); returns the previous mode.  Refuses compiled when not available."""
    global COMPILED
    if compiled and not compiled_available():
        raise RuntimeError(f"the compiled allocator is not available: {WHY_INTERPRETED}")
    previous = COMPILED
    COMPILED = compiled  # allocator.COMPILED reads it (allocator/__init__.py __getattr__)
    return previous
