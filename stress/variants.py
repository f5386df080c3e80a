"""Variants and sweeps: the run configurations an experiment compares, as a person writes them.

A **variant** is a name and run options (``compare --variant``)::

    --variant base:policy=none
    --variant k3:policy=median,median.k=3,nmbclusters=1024
    --variant races:inject=wake-one+lost-wakeup,sched=pct

Options are separated by commas, so a list inside a value uses ``+``
(``inject=wake-one+lost-wakeup``).  An option is any option of ``run`` by its name
without dashes (``nmbclusters``, ``round-length`` or ``round_length``, ``era``,
``workload``, ``cpus``, ``sched``, ...), a switch with a truth value (``invariants=1``),
or a policy parameter as ``POLICY.PARAM`` (``median.k=3``).

A **sweep** (``--sweep median.k=1,2,3 --sweep nmbclusters=1024,2048``) multiplies: every
variant is run with every combination of the swept values (the cartesian product), each
combination a variant of its own named after its values (``k3,nmbclusters=1024``).
Without a variant the sweep alone makes the variants.

``--configs 2005,modern:median`` (the first compare's syntax) stays as a shorthand: an
item ``ERA`` is the variant ``ERA:era=ERA`` and ``ERA:POLICY`` is
``ERA:POLICY:era=ERA,policy=POLICY``.

This module only reads the syntax and the policy-parameter rules
(:func:`policy_params`, shared by ``run``, ``compare`` and ``replay``); what each option
means and which values it takes is ``run``'s own parser's business
(stress/commands/compare.py resolves a variant through it, so every run option can vary
and is checked exactly as ``run`` checks it).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from allocator import policy as _policy
from stress.config import ERAS
from stress.options import UsageError, did_you_mean

NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")  #: a variant name: letters, digits, _ . + -
LIST_SEP = "+"  #: separates the items of a list inside one option value


@dataclass(frozen=True)
class Variant:
    """One configuration of an experiment: a name and the run options it sets, as given."""

    name: str
    options: tuple[tuple[str, str], ...] = ()  #: (option, value text) in the order given
    origin: str = "--variant"  #: where it was given, for error messages

    def as_dict(self) -> dict[str, str]:
        """The options as a dict (option -> value text)."""
        return dict(self.options)


def option_key(text: str) -> str:
    """An option as written (``round-length``, ``--nmbclusters``, ``median.k``) in its
    canonical form (``round_length``, ``nmbclusters``, ``median.k``)."""
    return text.strip().lstrip("-").replace("-", "_") if "." not in text else text.strip()


def _pairs(text: str, where: str) -> tuple[tuple[str, str], ...]:
    """``opt=val,opt=val`` -> ((opt, val), ...); raise UsageError naming ``where``."""
    out: list[tuple[str, str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise UsageError(f"{where}: expected OPTION=VALUE, got {item.strip()!r} "
                             f"(a list inside a value uses {LIST_SEP}: inject=wake-one{LIST_SEP}lost-wakeup)")
        out.append((option_key(key), value.strip()))
    keys = [k for k, _ in out]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UsageError(f"{where}: option {twice[0]} given twice")
    return tuple(out)


def parse_variant(text: str) -> Variant:
    """``NAME:opt=val,...`` -> a Variant (UsageError, naming ``--variant``, if malformed)."""
    name, colon, rest = text.partition(":")
    name = name.strip()
    if not colon or not NAME_RE.match(name):
        raise UsageError(f"--variant: expected NAME:OPTION=VALUE,... with a NAME of letters, digits, "
                         f"_ . + -, got {text!r}")
    return Variant(name, _pairs(rest, f"--variant {name}"), f"--variant {name}")


@dataclass(frozen=True)
class Sweep:
    """One swept option and its values (``--sweep opt=v1,v2``)."""

    key: str
    values: tuple[str, ...]


def parse_sweep(text: str) -> Sweep:
    """``opt=v1,v2,...`` -> a Sweep (UsageError naming ``--sweep`` if malformed)."""
    key, eq, rest = text.partition("=")
    values = tuple(v.strip() for v in rest.split(",") if v.strip())
    if not eq or not key.strip() or not values:
        raise UsageError(f"--sweep: expected OPTION=VALUE,VALUE,..., got {text!r}")
    if len(set(values)) != len(values):
        raise UsageError(f"--sweep {key.strip()}: a value is listed twice in {text!r}")
    return Sweep(option_key(key), values)


def parse_configs(text: str) -> list[Variant]:
    """``2005,2007,modern:median`` (the first compare's ``--configs``) -> variants."""
    out: list[Variant] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        era, _, policy = item.partition(":")
        if era not in ERAS:
            raise UsageError(f"--configs: unknown era {era!r} in {item!r} (allowed: {', '.join(ERAS)})")
        # POLICY: a built-in, an installed plugin, FILE.py:CLASS or MODULE:CLASS (the plugin
        # spec keeps its colon: only the first one ends the era); run's parser checks it
        opts = (("era", era),) + ((("policy", policy),) if policy else ())
        out.append(Variant(item, opts, f"--configs {item}"))
    if not out:
        raise UsageError("--configs: no configuration given (for example: 2005,2007,modern:median)")
    return out


def expand(variants: Sequence[Variant], sweeps: Sequence[Sweep]) -> list[Variant]:
    """Every variant combined with every combination of the swept values (a sweep value
    beats the same option of the variant); the names must come out distinct."""
    keys = [s.key for s in sweeps]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UsageError(f"--sweep: option {twice[0]} swept twice")
    bases = list(variants) or [Variant("", (), "--sweep")]
    out: list[Variant] = []
    for v in bases:
        for combo in itertools.product(*(s.values for s in sweeps)):
            swept = tuple(zip(keys, combo, strict=True))
            opts = tuple((k, val) for k, val in v.options if k not in keys) + swept
            parts = ([v.name] if v.name else []) + [f"{k}={val}" for k, val in swept]
            origin = v.origin if not swept else f"{v.origin} --sweep {','.join(parts)}".strip()
            out.append(Variant(",".join(parts), opts, origin))
    names = [v.name for v in out]
    dup = next((v for v in out if names.count(v.name) > 1), None)
    if dup is not None:
        raise UsageError(f"{dup.origin}: variant {dup.name!r} is listed twice")
    return out


def split_param(key: str) -> tuple[str | None, str]:
    """``median.k`` -> ("median", "k"); ``k`` -> (None, "k")."""
    policy, dot, param = key.rpartition(".")
    return (policy, param) if dot else (None, key)


def policy_params(policy: str, given: Iterable[tuple[str, float]], where: str = "--policy-param") -> dict[str, float]:
    """The parameters of ``policy`` from ``(name, value)`` items written either way,
    ``k`` or ``median.k`` (the policy's own name); an item for another policy, or a
    parameter the policy does not have, is a UsageError naming ``where``.

    The policies are the registry's (:func:`allocator.policy.policy_names`): the built-ins
    and the plugins loaded by then (stress/plugins.py registers a plugin when ``--policy``
    or a variant's ``policy=`` names it, so its own ``PARAMS`` are the allowed ones)."""
    try:
        known = _policy.policy_params(policy)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}{did_you_mean(policy, _policy.policy_names())}") from None
    out: dict[str, float] = {}
    for name, value in given:
        owner, param = split_param(name)
        if owner is not None and owner != policy:
            if owner not in _policy.policy_names():
                names = _policy.policy_names()
                raise UsageError(f"{where}: {name}: unknown policy {owner!r} (allowed: {', '.join(names)})"
                                 f"{did_you_mean(owner, names)}")
            raise UsageError(f"{where}: {name} is a parameter of policy {owner}, but the policy is {policy}")
        if param not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise UsageError(f"{where}: policy {policy} has no parameter {param!r}; allowed: {allowed}"
                             f"{did_you_mean(param, known)}")
        out[param] = float(value)
    return out
