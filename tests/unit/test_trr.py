"""TRR++ advantages against hand-computed cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azr.tasks import Role, TaskType
from azr.trr import ALL_GROUPS, GroupStats, group_stats, summary_metrics, trr_advantages

DS = (TaskType.DEDUCTION, Role.SOLVE)
DP = (TaskType.DEDUCTION, Role.PROPOSE)
AS = (TaskType.ABDUCTION, Role.SOLVE)
IP = (TaskType.INDUCTION, Role.PROPOSE)


def test_six_groups() -> None:
    assert len(ALL_GROUPS) == 6 and len(set(ALL_GROUPS)) == 6


def test_two_values_normalise_to_plus_minus_one() -> None:
    # rewards 1 and -1: mean 0, population std 1 -> advantages +-1/(1+eps)
    advantages = trr_advantages([DS, DS], [1.0, -1.0], eps=1e-6)
    assert advantages == pytest.approx([1 / (1 + 1e-6), -1 / (1 + 1e-6)], rel=1e-12)


def test_mixed_format_failures_and_real_rewards_per_group() -> None:
    # deduction/solve: [-1 (format), -0.5 (wrong), 1, 1]: mean 0.125,
    #   deviations -1.125, -0.625, 0.875, 0.875; variance (1.265625 + 0.390625 + 2*0.765625)/4
    #   = 0.796875; std = 0.8926785...
    # deduction/propose: [-1, 0.5]: mean -0.25, std 0.75
    groups = [DS, DP, DS, DS, DP, DS]
    rewards = [-1.0, -1.0, -0.5, 1.0, 0.5, 1.0]
    advantages = trr_advantages(groups, rewards, eps=0.0 + 1e-6)
    std_ds = math.sqrt(0.796875)
    expected = [
        -1.125 / (std_ds + 1e-6),
        -0.75 / (0.75 + 1e-6),
        -0.625 / (std_ds + 1e-6),
        0.875 / (std_ds + 1e-6),
        0.75 / (0.75 + 1e-6),
        0.875 / (std_ds + 1e-6),
    ]
    assert advantages == pytest.approx(expected, rel=1e-12)
    stats = group_stats(groups, rewards)
    assert stats[DS] == GroupStats(mean=0.125, std=pytest.approx(std_ds), count=4)
    assert stats[DP] == GroupStats(mean=-0.25, std=0.75, count=2)


def test_groups_do_not_share_baselines() -> None:
    # The same reward gets opposite advantages in two groups with different means.
    advantages = trr_advantages([DS, DS, AS, AS], [0.0, 1.0, 0.0, -1.0])
    assert advantages[0] < 0 < advantages[2]


def test_all_equal_and_single_sample_groups_get_zero() -> None:
    groups = [DS, DS, DS, IP, AS, AS]
    rewards = [0.1, 0.1, 0.1, 0.7, -1.0, 1.0]
    advantages = trr_advantages(groups, rewards)
    assert advantages[:4] == [0.0, 0.0, 0.0, 0.0]
    assert advantages[4] == pytest.approx(-1.0, rel=1e-5) and advantages[5] == pytest.approx(
        1.0, rel=1e-5
    )
    assert trr_advantages([], []) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rewards_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="not finite"):
        trr_advantages([DS, DS], [0.5, bad])


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 groups but 1 rewards"):
        trr_advantages([DS, DS], [1.0])
    with pytest.raises(ValueError, match="not a \\(TaskType, Role\\) pair"):
        trr_advantages([("deduction", "judge")], [1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="eps"):
        trr_advantages([DS], [1.0], eps=0.0)


def test_string_keys_are_accepted_and_summary_is_flat() -> None:
    stats = group_stats([("deduction", "solve"), DS], [1.0, 0.0])  # type: ignore[list-item]
    assert list(stats) == [DS]
    metrics = summary_metrics(stats)
    assert metrics == {
        "deduction/solve/mean": 0.5,
        "deduction/solve/std": 0.5,
        "deduction/solve/count": 2.0,
    }


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(ALL_GROUPS), st.floats(-1.0, 1.0, allow_nan=False)),
        max_size=40,
    )
)
def test_advantages_are_finite_and_centred_per_group(samples: list) -> None:
    groups = [group for group, _ in samples]
    rewards = [reward for _, reward in samples]
    advantages = trr_advantages(groups, rewards)
    assert len(advantages) == len(samples) and all(math.isfinite(a) for a in advantages)
    for key in set(groups):
        group_advantages = [a for g, a in zip(groups, advantages, strict=True) if g == key]
        assert abs(math.fsum(group_advantages)) < 1e-6 * max(1, len(group_advantages))
