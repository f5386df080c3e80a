"""Plugins: trimming policies and workloads from outside zonelimit, and what a run records of them.

A user brings a policy (a subclass of :class:`allocator.policy.Policy`) or a workload (a
subclass of :class:`stress.workloads.Workload`) in one of three ways, all named by a
*spec* wherever a built-in name goes (``--policy``, ``--workload``, a compare variant)::

    NAME                    a built-in, or an installed package's entry point in the group
                            ``zonelimit.policies`` / ``zonelimit.workloads``
    path/to/file.py:Class   a single file, loaded under a module name of its own
    package.module:Class    an importable module (on sys.path)

Who does what::

    command line --> spec_checker(kind)(text) --> resolve(kind, spec) --> PluginRecord
                                                     | loads, checks the class, hashes its source,
                                                     v registers it under the spec
                     allocator.policy.register_policy / stress.workloads.register_workload
    RunConfig.plugins = {kind: record}  --> run.json "config.plugins" (spec, version, sha256, ...)
    replay: recorded_plugins(cfg) --> only what the user names again (or --trust-plugins)
            --> resolve --> difference(recorded, now): a changed source is refused unless --force

Design decisions, and why:

- **Code a document names is never imported on its own.**  Run folders travel between
  people; ``replay`` and ``report`` read run.json, and importing what a document names
  would run a stranger's code.  So nothing here is called with a spec read from a
  document unless the user named that plugin again (or passed ``--trust-plugins``):
  :func:`recorded_plugins` only *lists* what a run needs, by reading strings.
- **The hash covers the source that ran.**  ``sha256`` is taken over the Python files of
  the plugin: the file itself, or for a module, every ``.py`` file of its top-level
  package (a helper module's change changes what runs as much as the class's own).
  It is taken when the code is loaded, so it describes the code the run executes.
- **Loaded once per process, found again by name.**  A file plugin becomes module
  ``zonelimit_plugin_<stem>_<hash>`` in ``sys.modules``, so its classes pickle by
  reference and a forked worker (the manager forks, docs/architecture.md) finds them
  where the manager left them.  A file that changed is loaded again under its new hash.
- **Spawn and remote executors.**  A spawned process (or a Dask worker) starts with
  empty registries: it calls :func:`load_config` with the run's configuration first,
  which resolves every plugin the configuration names and refuses one whose source hash
  differs from the recorded one (the source an executor ships travels with its hash).
- **Built-in names win.**  An entry point that takes a built-in's name is ignored: a
  name in a result must mean the same thing on every machine that has zonelimit.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from allocator.policy import BUILTIN_POLICIES, Policy, check_params, register_policy
from allocator.policy import policy_class as _registered_policy
from stress.config import RunConfig
from stress.options import did_you_mean
from stress.workloads import WORKLOADS, Workload, register_workload, workload_class

KINDS = ("policy", "workload")
GROUPS = {"policy": "zonelimit.policies", "workload": "zonelimit.workloads"}  #: entry-point groups
FILE_MODULE_PREFIX = "zonelimit_plugin_"  #: module names of file plugins


class PluginError(ValueError):
    """A plugin cannot be found, loaded or used: one line, naming the spec."""

    kind: str = ""  #: "policy" or "workload", once known (the option to name in a usage error)


@dataclass(frozen=True)
class PluginRecord:
    """What a run records of one plugin (run.json ``config.plugins[kind]``)."""

    kind: str  #: "policy" or "workload"
    spec: str  #: as the user wrote it (what selects it on the command line)
    name: str  #: the class's ``name`` (its class name when it sets none)
    origin: str  #: "entry-point", "module" or "file"
    target: str  #: ``module:qualname`` of the class, as loaded
    version: str | None  #: the distribution's version, else the module's ``__version__``, else None
    sha256: str  #: over the source files (see the module docstring)
    path: str | None = None  #: the file, or the package folder, the source was read from

    def to_dict(self) -> dict[str, Any]:
        """The record as run.json stores it."""
        return asdict(self)

    def short(self) -> str:
        """``halve 1.0 (sha256 3f2a9c1b...)`` for messages."""
        version = f" {self.version}" if self.version else ""
        return f"{self.name}{version} (sha256 {self.sha256[:12]}...)"


# --- specs -----------------------------------------------------------------------------------


def builtin_names(kind: str) -> tuple[str, ...]:
    """The built-in names of ``kind``."""
    return tuple(BUILTIN_POLICIES) if kind == "policy" else tuple(WORKLOADS)


def is_builtin(kind: str, spec: str) -> bool:
    """True if ``spec`` names a built-in policy or workload (no code to load)."""
    return spec in builtin_names(kind)


def spec_origin(spec: str) -> str:
    """``file`` (``path.py:Class``), ``module`` (``pkg.mod:Class``) or ``entry-point`` (a name)."""
    where, colon, _ = spec.rpartition(":")
    if not colon:
        return "entry-point"
    return "file" if where.endswith(".py") or "/" in where else "module"


def entry_points(kind: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The installed entry points of ``kind``'s group, by name (none is loaded);
    built-in names are left out (they win)."""
    found = importlib.metadata.entry_points(group=GROUPS[kind])
    builtins = builtin_names(kind)
    return {ep.name: ep for ep in sorted(found, key=lambda e: e.name) if ep.name not in builtins}


def names(kind: str) -> tuple[str, ...]:
    """Every name ``--policy`` / ``--workload`` accepts without a ``:``: the built-ins, then
    the installed entry points."""
    return builtin_names(kind) + tuple(entry_points(kind))


# --- loading ---------------------------------------------------------------------------------

_records: dict[tuple[str, str], PluginRecord] = {}  #: (kind, spec) -> the record of what is registered


def resolve(kind: str, spec: str) -> PluginRecord | None:
    """Make ``spec`` usable as a ``kind`` ("policy" or "workload"): None for a built-in;
    else load it (once per process; a file again when its source changed), check the
    class, register it under ``spec`` and return its record.  The one function every
    command (run, replay, compare variants, race) resolves a plugin through.

    Raises :class:`PluginError` (one line) when it cannot be loaded or is not a proper
    plugin of that kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}")
    if is_builtin(kind, spec):
        return None
    try:
        return _resolve(kind, spec)
    except PluginError as exc:
        exc.kind = kind
        raise


def _resolve(kind: str, spec: str) -> PluginRecord:
    known = _records.get((kind, spec))
    origin = spec_origin(spec)
    if known is not None and (origin != "file" or _file_hash(Path(spec.rpartition(":")[0])) == known.sha256):
        return known
    if origin == "entry-point":
        cls, record = _load_entry_point(kind, spec)
    elif origin == "file":
        cls, record = _load_file(kind, spec)
    else:
        cls, record = _load_module(kind, spec)
    _check_class(kind, spec, cls)
    if kind == "policy":
        register_policy(spec, cls)
    else:
        register_workload(spec, cls)
    _records[(kind, spec)] = record
    return record


def _load_entry_point(kind: str, spec: str) -> tuple[type, PluginRecord]:
    ep = entry_points(kind).get(spec)
    if ep is None:
        raise PluginError(f"{spec}: no such {kind}: not built in, no entry point {spec!r} in the group "
                          f"{GROUPS[kind]}, and not FILE.py:CLASS or MODULE:CLASS"
                          + did_you_mean(spec, names(kind)))
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - the plugin's own failure, reported in one line
        raise PluginError(f"{spec}: entry point {ep.value} cannot be loaded: {_failure(exc)}") from None
    cls = _as_class(spec, obj)
    module = sys.modules[cls.__module__]
    dist = ep.dist
    version = dist.version if dist is not None else _module_version(module)
    path, digest = _module_source(module)
    return cls, PluginRecord(kind, spec, _name(cls), "entry-point", f"{cls.__module__}:{cls.__qualname__}",
                             version, digest, path)


def _load_module(kind: str, spec: str) -> tuple[type, PluginRecord]:
    modname, _, attr = spec.rpartition(":")
    if not modname or not attr:
        raise PluginError(f"{spec}: expected MODULE:CLASS or FILE.py:CLASS")
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and modname.startswith(exc.name):
            raise PluginError(f"{spec}: no module named {exc.name!r} on the Python path "
                              "(a file is given as path/to/file.py:CLASS)") from None
        raise PluginError(f"{spec}: cannot import {modname}: {_failure(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the plugin's own failure, reported in one line
        raise PluginError(f"{spec}: cannot import {modname}: {_failure(exc)}") from None
    cls = _as_class(spec, _attribute(spec, module, attr))
    path, digest = _module_source(module)
    return cls, PluginRecord(kind, spec, _name(cls), "module", f"{cls.__module__}:{cls.__qualname__}",
                             _module_version(module), digest, path)


def _load_file(kind: str, spec: str) -> tuple[type, PluginRecord]:
    where, _, attr = spec.rpartition(":")
    path = Path(where)
    if not attr:
        raise PluginError(f"{spec}: expected FILE.py:CLASS (the class to use after the colon)")
    if not path.is_file():
        raise PluginError(f"{spec}: no such file {where}")
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise PluginError(f"{spec}: cannot read {where}: {exc.strerror}") from None
    digest = hashlib.sha256(source).hexdigest()
    stem = re.sub(r"\W", "_", path.stem)
    modname = f"{FILE_MODULE_PREFIX}{stem}_{digest[:12]}"
    module = sys.modules.get(modname)
    if module is None:
        module = _exec_file(spec, path, modname)
    cls = _as_class(spec, _attribute(spec, module, attr))
    return cls, PluginRecord(kind, spec, _name(cls), "file", f"{modname}:{cls.__qualname__}",
                             _module_version(module), digest, str(path.resolve()))


def _exec_file(spec: str, path: Path, modname: str) -> ModuleType:
    """Run the file as module ``modname`` (kept in sys.modules, so pickling and forked
    workers find its classes)."""
    loader_spec = importlib.util.spec_from_file_location(modname, path)
    if loader_spec is None or loader_spec.loader is None:
        raise PluginError(f"{spec}: {path} is not a Python source file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[modname] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - SystemExit in a plugin is a plugin failure too
        del sys.modules[modname]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(f"{spec}: cannot load {path}: {_failure(exc)}") from None
    return module


def _attribute(spec: str, module: ModuleType, attr: str) -> Any:
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            have = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
            raise PluginError(f"{spec}: {module.__name__} has no {attr!r}" + did_you_mean(attr, have))
        obj = getattr(obj, part)
    return obj


def _as_class(spec: str, obj: Any) -> type:
    if not isinstance(obj, type):
        raise PluginError(f"{spec}: names {type(obj).__name__} {obj!r}, not a class")
    return obj


def _check_class(kind: str, spec: str, cls: type) -> None:
    """Refuse a class that is not a proper plugin of ``kind``, in one line saying why."""
    if kind == "policy":
        if not issubclass(cls, Policy):
            raise PluginError(f"{spec}: {cls.__qualname__} is not a subclass of allocator.policy.Policy")
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            raise PluginError(f"{spec}: {cls.__qualname__} does not implement {missing}")
        params = cls.PARAMS
        if not isinstance(params, Mapping) or not all(
                isinstance(k, str) and isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], (int, float))
                for k, v in params.items()):
            raise PluginError(f"{spec}: {cls.__qualname__}.PARAMS must map names to (default, help) pairs")
        try:
            cls(check_params(spec, {}, params))
        except Exception as exc:  # noqa: BLE001 - the plugin's own failure, reported in one line
            raise PluginError(f"{spec}: {cls.__qualname__}(its default parameters) fails: {_failure(exc)}") from None
    else:
        if not issubclass(cls, Workload):
            raise PluginError(f"{spec}: {cls.__qualname__} is not a subclass of stress.workloads.Workload")
        if cls.turn is Workload.turn:
            raise PluginError(f"{spec}: {cls.__qualname__} does not implement turn()")


def _name(cls: type) -> str:
    return str(getattr(cls, "name", "") or cls.__name__)


def _failure(exc: BaseException) -> str:
    """``ZeroDivisionError: division by zero (halve.py:12)``: the exception and the
    innermost frame of the user's code that raised it."""
    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    if frames:
        where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"


# --- the source hash and the version ---------------------------------------------------------


def _file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _module_source(module: ModuleType) -> tuple[str | None, str]:
    """(where the source was read, sha256 of it): a module inside a package hashes every
    ``.py`` file of its top-level package (by relative path and content, in path order);
    a lone module its own file."""
    top = sys.modules.get(module.__name__.partition(".")[0], module)
    folders = list(getattr(top, "__path__", []) or [])
    files: list[tuple[str, Path]] = []
    if folders:
        for folder in folders:
            root = Path(folder)
            files += [(str(p.relative_to(root)), p) for p in sorted(root.rglob("*.py"))
                      if "__pycache__" not in p.parts]
        where = folders[0]
    else:
        file = getattr(module, "__file__", None)
        if not file:
            raise PluginError(f"{module.__name__}: no source file to record (a built-in or frozen module)")
        files = [(Path(file).name, Path(file))]
        where = file
    digest = hashlib.sha256()
    for rel, p in files:
        digest.update(rel.encode() + b"\0")
        digest.update(p.read_bytes())
        digest.update(b"\0")
    return str(Path(where).resolve()), digest.hexdigest()


def _module_version(module: ModuleType) -> str | None:
    """The version of the distribution that installed the module's top-level package, else
    the ``__version__`` of the module or of its top-level package, else None."""
    top = module.__name__.partition(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    for holder in (module, sys.modules.get(top)):
        version = getattr(holder, "__version__", None)
        if version is not None:
            return str(version)
    return None


# --- configurations: record, check, load -----------------------------------------------------


def spec_of(cfg: RunConfig, kind: str) -> str:
    """The spec of ``kind`` a configuration runs (``cfg.policy`` / ``cfg.workload``)."""
    return str(getattr(cfg, kind))


def with_records(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``plugins`` recording every plugin it runs (resolving them: call it
    only for specs the user gave); built-ins record nothing."""
    records: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        record = resolve(kind, spec_of(cfg, kind))
        if record is not None:
            records[kind] = record.to_dict()
    return cfg.replace(plugins=records)


def recorded_plugins(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """The plugins a recorded configuration needs, by kind, read from the document only
    (nothing is imported): its record, or ``{"spec": ...}`` for a plugin spec recorded
    without one.  A plain name that is neither built in nor an installed entry point is
    not listed: it is unknown here, which the caller reports as such."""
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        spec = spec_of(cfg, kind)
        if is_builtin(kind, spec):
            continue
        record = cfg.plugins.get(kind) if isinstance(cfg.plugins, dict) else None
        if isinstance(record, dict):
            out[kind] = dict(record)
        elif spec_origin(spec) != "entry-point" or spec in entry_points(kind):
            out[kind] = {"spec": spec}  # a plugin spec recorded without its record
        # else: a name this version does not know (replay's config check says so)
    return out


def describe(recorded: Mapping[str, Any]) -> str:
    """``'examples/halve.py:HalvePolicy' (halve 1.0, sha256 3f2a9c1b0d4e...)`` from a recorded record."""
    details = [str(recorded[k]) for k in ("name", "version") if recorded.get(k)]
    if recorded.get("sha256"):
        details.append(f"sha256 {str(recorded['sha256'])[:12]}...")
    return f"{str(recorded.get('spec'))!r}" + (f" ({', '.join(details)})" if details else "")


def difference(recorded: Mapping[str, Any], now: PluginRecord) -> str | None:
    """What differs between the plugin a run recorded and the one loaded now (its source
    hash, then its class), or None when it is the same code."""
    if recorded.get("sha256") != now.sha256:
        old = str(recorded.get("sha256") or "none")[:12]
        return f"its source changed since the run (sha256 {old}... recorded, {now.sha256[:12]}... now)"
    if recorded.get("name") not in (None, now.name):
        return f"it is {now.name!r} now, the run used {recorded.get('name')!r}"
    return None


def load_config(cfg: RunConfig) -> None:
    """In a process that did not resolve ``cfg``'s plugins (spawn, a remote executor):
    load every plugin ``cfg`` runs and check it against the recorded source hash.
    Raises :class:`PluginError` naming the difference."""
    for kind in KINDS:
        spec = spec_of(cfg, kind)
        record = resolve(kind, spec)
        recorded = cfg.plugins.get(kind) if record is not None else None
        if record is not None and recorded is not None:
            diff = difference(recorded, record)
            if diff:
                raise PluginError(f"{kind} {spec}: {diff}")


def plugin_class(kind: str, spec: str) -> type:
    """The class ``spec`` selects (resolving it first)."""
    resolve(kind, spec)
    return _registered_policy(spec) if kind == "policy" else workload_class(spec)


# --- the command line ------------------------------------------------------------------------


def spec_checker(kind: str) -> Callable[[str], str]:
    """The argparse ``type=`` of ``--policy`` / ``--workload``: a built-in name, an installed
    entry point, ``FILE.py:CLASS`` or ``MODULE:CLASS``, loaded and checked now (the user
    named it); the error says what is allowed, with a "did you mean"."""

    def check(text: str) -> str:
        spec = text.strip()
        if not spec:
            raise argparse.ArgumentTypeError(f"must be a {kind} name ({', '.join(names(kind))}), "
                                             f"FILE.py:CLASS or MODULE:CLASS; got {text!r}")
        if is_builtin(kind, spec):
            return spec
        if spec_origin(spec) == "entry-point" and spec not in names(kind):
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(names(kind))}, or FILE.py:CLASS or MODULE:CLASS; "
                f"got {text!r}{did_you_mean(spec, names(kind))}")
        try:
            resolve(kind, spec)
        except PluginError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return spec

    check.__name__ = kind
    return check


def help_names(kind: str) -> str:
    """``none, exhaustion, ...; installed: halve`` for a --help text (nothing is loaded)."""
    installed = tuple(entry_points(kind))
    text = ", ".join(builtin_names(kind))
    return text + (f"; installed plugins: {', '.join(installed)}" if installed else "")
