"""The soak's verdicts: memory that creeps past the allowance fails it, noise and the warm-up do not."""

from __future__ import annotations

import argparse

import pytest

from tests.soak import WARM_UP_S, memory_verdict, seconds

MIB = 2**20


def run(rss_mib: list[float]) -> list[tuple[float, int]]:
    """One sample a second, starting at 0 s (the first WARM_UP_S seconds are the warm-up)."""
    return [(float(t), int(m * MIB)) for t, m in enumerate(rss_mib)]


def test_flat_memory_with_a_warm_up_climb_passes() -> None:
    warm_up = [200 + 15 * t for t in range(int(WARM_UP_S))]  # the climb while users spawn
    steady = [350 + (t % 3) for t in range(50)]  # allocator noise
    verdict = memory_verdict(run(warm_up + steady), allowance=0.05)
    assert verdict["ok"] and abs(verdict["growth_percent"]) < 1


def test_a_leak_fails() -> None:
    leaking = [350 + t for t in range(int(WARM_UP_S) + 50)]  # 1 MiB a second
    verdict = memory_verdict(run(leaking), allowance=0.05)
    assert not verdict["ok"] and verdict["growth_percent"] > 5


def test_too_short_a_run_cannot_pass() -> None:
    assert not memory_verdict(run([300.0] * (int(WARM_UP_S) + 3)), allowance=0.05)["ok"]


@pytest.mark.parametrize(("text", "expected"), [("60s", 60), ("2m", 120), ("1h30m", 5400), ("45", 45)])
def test_durations_as_locust_writes_them(text: str, expected: float) -> None:
    assert seconds(text) == expected


def test_a_nonsense_duration_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds("soon")
