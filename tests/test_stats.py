"""stress/stats.py on synthetic data: intervals that cover, paired comparisons that call a
real difference and refuse to call noise, the few-pairs rule, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stress import stats


def rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- one sample ---------------------------------------------------------------------


def test_min_pairs_is_where_the_exact_signed_rank_test_can_reach_5_percent() -> None:
    assert stats.MIN_PAIRS == 6  # 2/2**5 = 0.0625, 2/2**6 = 0.031
    assert stats.min_pairs(0.01) == 8
    assert stats.MIN_PER_SIDE == 4  # Mann-Whitney: 2/C(6,3) = 0.1, 2/C(8,4) = 0.029


def test_median_interval_covers_the_true_median_of_a_large_sample() -> None:
    x = rng().normal(100.0, 10.0, 200)
    est = stats.median_interval(list(x))
    assert est.n == 200 and est.low is not None and est.high is not None
    assert est.low < 100.0 < est.high
    assert est.high - est.low < 6  # about 2 * 1.96 * 1.25 * 10 / sqrt(200) = 3.5


def test_median_interval_ignores_unmeasured_values() -> None:
    est = stats.median_interval([None, 1.0, math.nan, 3.0, 2.0])
    assert (est.median, est.n) == (2.0, 3)


@pytest.mark.parametrize(("values", "expect"), [
    ([], (None, None, None, 0)),
    ([None], (None, None, None, 0)),
    ([5.0], (5.0, None, None, 1)),
    ([4.0, 4.0, 4.0], (4.0, 4.0, 4.0, 3)),
])
def test_median_interval_of_degenerate_samples(values: list[float | None],
                                               expect: tuple[float | None, ...]) -> None:
    est = stats.median_interval(values)
    assert (est.median, est.low, est.high, est.n) == expect


def test_relative_half_width() -> None:
    assert stats.Estimate(100.0, 90.0, 110.0, 6).relative_half_width() == pytest.approx(0.10)
    assert stats.Estimate(0.0, 0.0, 0.0, 6).relative_half_width() == 0.0
    assert stats.Estimate(0.0, -1.0, 1.0, 6).relative_half_width() == math.inf
    assert stats.Estimate(5.0, None, None, 1).relative_half_width() is None


def test_precise() -> None:
    assert stats.precise(stats.Estimate(100.0, 98.0, 102.0, 6), 0.05)
    assert not stats.precise(stats.Estimate(100.0, 80.0, 120.0, 6), 0.05)
    assert not stats.precise(stats.Estimate(100.0, None, None, 1), 0.05)  # one run: not known to be precise
    assert stats.precise(stats.Estimate(None, None, None, 0), 0.05)  # not measured: not waited for


def test_the_same_data_give_the_same_interval() -> None:
    x = list(rng(7).normal(50.0, 5.0, 9))
    assert stats.median_interval(x) == stats.median_interval(list(x))
    other = stats.median_interval(x, seed=stats.RNG_SEED + 1)  # the seed is what makes it repeatable
    assert other.median == stats.median_interval(x).median


# --- paired -------------------------------------------------------------------------


def pairs(base: np.ndarray, other: np.ndarray) -> list[tuple[float | None, float | None]]:
    return [(float(b), float(o)) for b, o in zip(base, other, strict=True)]


def test_a_real_paired_difference_is_called_with_its_direction() -> None:
    base = rng(2).normal(1000.0, 50.0, 10)  # drift shared by both members of a pair
    faster = base * 1.2 + rng(3).normal(0.0, 5.0, 10)
    c = stats.paired_comparison(pairs(base, faster), better="higher")
    assert c.kind == "ratio" and c.verdict == stats.BETTER and c.called
    assert c.low is not None and c.high is not None and 1.0 < c.low <= c.estimate <= c.high
    assert c.estimate == pytest.approx(1.2, abs=0.02)
    assert c.p is not None and c.p < 0.05 and c.more_repeats is None
    assert stats.paired_comparison(pairs(base, faster), better="lower").verdict == stats.WORSE


def test_the_pairing_sees_through_drift_that_swamps_the_difference() -> None:
    base = np.linspace(500.0, 1500.0, 8)  # the machine got 3x faster during the experiment
    other = base * 1.05
    c = stats.paired_comparison(pairs(base, other), better="higher")
    assert c.verdict == stats.BETTER and c.estimate == pytest.approx(1.05)
    # unpaired, the two samples overlap almost entirely
    assert stats.two_sample_comparison(list(base), list(other), "higher").verdict == stats.UNDISTINGUISHED


def test_noise_is_not_called_and_the_table_says_how_many_more_repeats() -> None:
    base = rng(4).normal(100.0, 10.0, 8)
    other = base + rng(5).normal(0.0, 10.0, 8)  # no effect, only noise
    c = stats.paired_comparison(pairs(base, other), better="lower")
    assert c.verdict == stats.UNDISTINGUISHED and not c.called
    assert c.low is not None and c.high is not None and c.low <= 1.0 <= c.high
    assert c.more_repeats is not None and c.more_repeats >= 1
    assert "interval includes 1" in c.why


def test_with_fewer_than_six_pairs_nothing_is_called_however_large_the_difference() -> None:
    base = np.array([100.0, 101.0, 99.0, 100.5, 100.2])
    c = stats.paired_comparison(pairs(base, base * 3), better="lower")
    assert c.low is not None and c.low > 1.0  # the interval alone would call it
    assert c.p == pytest.approx(2 / 2**5)
    assert c.verdict == stats.UNDISTINGUISHED
    assert c.more_repeats == 1 and "5 < 6" in c.why
    six = np.append(base, 100.1)
    assert stats.paired_comparison(pairs(six, six * 3), better="lower").verdict == stats.WORSE


def test_a_zero_baseline_is_compared_by_difference() -> None:
    c = stats.paired_comparison([(0.0, 1.0)] * 6, better="lower")  # a wedge in every run, none in the baseline
    assert c.kind == "difference" and c.estimate == 1.0 and (c.low, c.high) == (1.0, 1.0)
    assert c.verdict == stats.WORSE and c.reference == 0.0


def test_identical_figures_are_not_distinguishable_and_no_repeat_would_help() -> None:
    c = stats.paired_comparison([(5.0, 5.0)] * 8, better="lower")
    assert (c.estimate, c.p, c.verdict, c.more_repeats) == (1.0, 1.0, stats.UNDISTINGUISHED, None)


def test_unmeasured_pairs_are_left_out() -> None:
    assert stats.paired_comparison([(None, 1.0), (2.0, None)], "lower").verdict == stats.UNMEASURED
    c = stats.paired_comparison([(None, 1.0), (2.0, 3.0)], "lower")
    assert c.n == 1 and c.low is None and c.more_repeats == stats.MIN_PAIRS - 1


def test_more_repeats_grows_with_the_square_of_the_relative_spread() -> None:
    # estimate 1.1, interval reaches 0.9: gap 0.1, reach 0.2: 4x the pairs
    assert stats.more_repeats(10, 1.1, 0.9, 1.3, 1.0, 6) == 30
    assert stats.more_repeats(10, 1.1, 1.05, 1.15, 1.0, 6) == 1  # already excludes: at least one more
    assert stats.more_repeats(3, 1.1, 1.05, 1.15, 1.0, 6) == 3  # up to the six the test needs
    assert stats.more_repeats(10, 1.0, 0.9, 1.1, 1.0, 6) is None


def test_paired_comparison_is_deterministic() -> None:
    base = rng(8).normal(10.0, 1.0, 12)
    other = base * rng(9).normal(1.0, 0.1, 12)
    assert stats.paired_comparison(pairs(base, other), "lower") == stats.paired_comparison(pairs(base, other), "lower")


# --- two independent samples (bench --compare) ----------------------------------------


def test_two_samples_a_clear_change_is_significant() -> None:
    old = list(rng(10).normal(4.0, 0.1, 6))
    new = list(rng(11).normal(3.2, 0.1, 6))
    c = stats.two_sample_comparison(old, new, "lower")
    assert c.verdict == stats.BETTER and c.estimate == pytest.approx(0.8, abs=0.05)
    assert c.high is not None and c.high < 1.0


def test_two_samples_too_few_values_cannot_be_significant() -> None:
    c = stats.two_sample_comparison([4.0, 4.1, 3.9], [2.0, 2.1, 1.9], "lower")
    assert c.verdict == stats.UNDISTINGUISHED and "3 < 4" in c.why
    one = stats.two_sample_comparison([1.08], [1.08], "lower")
    assert one.low is None and one.verdict == stats.UNDISTINGUISHED
    assert stats.two_sample_comparison([], [1.0], "lower").verdict == stats.UNMEASURED
