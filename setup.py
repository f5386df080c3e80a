"""Build: compile the allocator's hot modules with Cython where a C compiler exists.

The metadata is in pyproject.toml; this file only adds the optional extension modules
(allocator/implementation.py says why and how they are chosen at run time).  Each hot
module ``allocator/X.py`` (with its ``X.pxd`` types, if any, and the shared
``atomics.pxd``) is copied to
``build/cython/allocator/_compiled/X.py`` with the SHA-256 of the source appended, and
compiled as ``allocator._compiled.X``.  Every extension is optional: without a C compiler
(or with ``CC=false``) the build warns and the install runs interpreted.  With
``ZONELIMIT_BUILD_PURE=1`` nothing is compiled at all (not even Cython's C generation).
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
SRC = ROOT / "allocator"
OUT = ROOT / "build" / "cython"
# Cython directives: Python semantics kept (bounds checked, negative indexes wrap, C ints
# checked on conversion).  The types come from the .pxd files only: annotations are for
# mypy (annotation_typing off: an ``int`` annotation would make Cython refuse a numpy int).
DIRECTIVES = {"language_level": 3, "annotation_typing": False}


def hot_modules() -> tuple[str, ...]:
    """allocator/implementation.py's HOT_MODULES, read without importing the package."""
    tree = ast.parse((SRC / "implementation.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "HOT_MODULES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise SystemExit("setup.py: allocator/implementation.py has no HOT_MODULES")


def source_hash(name: str) -> str:
    """The module's .py and every .pxd of allocator/: allocator/implementation.py
    ``source_hash`` computes the same at import to tell a stale build (setup.py cannot
    import the package it builds, so the rule is written twice; tests/test_implementation.py
    holds them equal)."""
    digest = hashlib.sha256((SRC / f"{name}.py").read_bytes())
    for pxd in sorted(SRC.glob("*.pxd")):
        digest.update(pxd.name.encode() + b"\0" + pxd.read_bytes())
    return digest.hexdigest()


def stage_sources(names: tuple[str, ...]) -> list[Extension]:
    """Copy each hot module under the compiled package's name, with every .pxd of
    allocator/ (a module's types, and atomics.pxd, the C atomics they share)."""
    pkg = OUT / "allocator" / "_compiled"
    pkg.mkdir(parents=True, exist_ok=True)
    for init in (OUT / "allocator" / "__init__.py", pkg / "__init__.py"):
        init.write_text("")
    for pxd in SRC.glob("*.pxd"):  # each module's types, and the shared atomics.pxd they cimport
        staged = pkg / pxd.name
        if not staged.exists() or staged.read_bytes() != pxd.read_bytes():  # else cythonize redoes all
            shutil.copyfile(pxd, staged)
    exts = []
    for name in names:
        src = (SRC / f"{name}.py").read_bytes()
        digest = source_hash(name)
        text = src.decode() + f"\n_SOURCE_SHA256 = {digest!r}  # appended by setup.py\n"
        target = pkg / f"{name}.py"
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        exts.append(Extension(f"allocator._compiled.{name}", [str(target.relative_to(ROOT))], optional=True))
    return exts


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a module that cannot be compiled is left
    out, and the allocator runs interpreted (implementation.py needs every one)."""

    def run(self) -> None:
        self.parallel = self.parallel or min(os.cpu_count() or 1, 4)
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 -- any build failure means: run interpreted
            print(f"zonelimit: the allocator could not be compiled ({e}); it will run interpreted",
                  file=sys.stderr)


def extensions() -> list[Extension]:
    if os.environ.get("ZONELIMIT_BUILD_PURE", "") not in ("", "0"):
        print("zonelimit: ZONELIMIT_BUILD_PURE is set: the allocator is not compiled", file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("zonelimit: Cython is not installed: the allocator will run interpreted", file=sys.stderr)
        return []
    os.chdir(ROOT)
    return list(cythonize(stage_sources(hot_modules()), compiler_directives=DIRECTIVES, quiet=True,
                          include_path=[str(OUT)]))


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
