"""stress/variants.py: the syntax of --variant, --sweep and --configs, and policy parameters
written either way."""

from __future__ import annotations

import pytest

from stress.options import UsageError
from stress.variants import Sweep, Variant, expand, parse_configs, parse_sweep, parse_variant, policy_params


def test_a_variant_is_a_name_and_options_with_plus_for_lists() -> None:
    v = parse_variant("races:inject=wake-one+lost-wakeup,sched=pct,round-length=2,median.k=3")
    assert v.name == "races"
    assert v.options == (("inject", "wake-one+lost-wakeup"), ("sched", "pct"), ("round_length", "2"),
                         ("median.k", "3"))
    assert parse_variant("base:").options == ()


@pytest.mark.parametrize(("text", "needle"), [
    ("nocolon", "expected NAME:OPTION=VALUE"),
    (":policy=none", "expected NAME:OPTION=VALUE"),
    ("a b:policy=none", "expected NAME:OPTION=VALUE"),
    ("k1:policy", "--variant k1: expected OPTION=VALUE"),
    ("k1:policy=none,policy=median", "--variant k1: option policy given twice"),
    ("k1:=3", "--variant k1: expected OPTION=VALUE"),
])
def test_malformed_variants_are_refused_naming_the_variant(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_variant(text)


def test_a_sweep_is_one_option_and_its_values() -> None:
    assert parse_sweep("median.k=1,2,3") == Sweep("median.k", ("1", "2", "3"))
    assert parse_sweep("--nmbclusters=1024") == Sweep("nmbclusters", ("1024",))
    with pytest.raises(UsageError, match="--sweep: expected"):
        parse_sweep("median.k")
    with pytest.raises(UsageError, match="listed twice"):
        parse_sweep("k=1,1")


def test_sweeps_expand_to_the_cartesian_product_named_after_their_values() -> None:
    out = expand([], [parse_sweep("median.k=1,2,3"), parse_sweep("nmbclusters=1024,2048")])
    assert [v.name for v in out] == ["median.k=1,nmbclusters=1024", "median.k=1,nmbclusters=2048",
                                     "median.k=2,nmbclusters=1024", "median.k=2,nmbclusters=2048",
                                     "median.k=3,nmbclusters=1024", "median.k=3,nmbclusters=2048"]
    assert out[3].as_dict() == {"median.k": "2", "nmbclusters": "2048"}


def test_a_sweep_multiplies_every_variant_and_beats_its_option() -> None:
    vs = [parse_variant("a:policy=none,nmbclusters=512"), parse_variant("b:policy=median")]
    out = expand(vs, [Sweep("nmbclusters", ("1024", "2048"))])
    assert [v.name for v in out] == ["a,nmbclusters=1024", "a,nmbclusters=2048", "b,nmbclusters=1024",
                                     "b,nmbclusters=2048"]
    assert out[0].as_dict() == {"policy": "none", "nmbclusters": "1024"}
    assert expand(vs, []) == vs  # no sweep: the variants as given


def test_names_must_come_out_distinct() -> None:
    with pytest.raises(UsageError, match="variant 'a' is listed twice"):
        expand([Variant("a"), Variant("a")], [])
    with pytest.raises(UsageError, match="swept twice"):
        expand([], [Sweep("k", ("1",)), Sweep("k", ("2",))])


def test_configs_are_a_shorthand_for_era_and_policy_variants() -> None:
    out = parse_configs("2005, modern:median")
    assert [(v.name, v.as_dict()) for v in out] == [("2005", {"era": "2005"}),
                                                     ("modern:median", {"era": "modern", "policy": "median"})]
    # a plugin spec keeps its colons (only the first ends the era); run's parser checks the policy
    assert parse_configs("modern:x/halve.py:Halve")[0].as_dict() == {"era": "modern", "policy": "x/halve.py:Halve"}
    for bad, needle in (("2006", "unknown era '2006'"), (",", "no config")):
        with pytest.raises(UsageError, match=needle):
            parse_configs(bad)


def test_policy_params_in_either_form() -> None:
    assert policy_params("median", [("k", 3.0), ("median.window", 4.0)]) == {"k": 3.0, "window": 4.0}
    assert policy_params("wss-2019", [("wss-2019.periodic", 1.0)]) == {"periodic": 1.0}
    assert policy_params("none", []) == {}


@pytest.mark.parametrize(("policy", "item", "needle"), [
    ("median", ("wss.periodic", 1.0), "wss.periodic is a parameter of policy wss, but the policy is median"),
    ("median", ("lru.k", 1.0), "unknown policy 'lru'"),
    ("median", ("q", 1.0), "policy median has no parameter 'q'; allowed: k, max_prefill, percpu, quiet, window"),
    ("none", ("k", 1.0), "policy none has no parameter 'k'; allowed: none"),
])
def test_policy_params_refused_naming_the_option(policy: str, item: tuple[str, float], needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")) as err:
        policy_params(policy, [item])
    assert str(err.value).startswith("--policy-param: ")
