"""make bench's verdict: each of the fast path's speed targets, PASS or FAIL, on the run's figures."""

from __future__ import annotations

from tests.bench.bench import SCENARIOS, Result, targets


def results(
    *, c64_req_s: float, c64_p99: tuple[float, ...], rows_s_64: float
) -> dict[tuple[str, str], Result]:
    """A run's figures: mlflow at 40 req/s everywhere (p50 20 ms), the ceiling at 6,000 req/s."""
    by = {}
    for name, rows, connections in SCENARIOS:
        ours = {"single row, c=64": c64_req_s}.get(name, rows_s_64 / rows if rows > 1 else 1000.0)
        p99 = sorted(c64_p99)[len(c64_p99) // 2] if name == "single row, c=64" else 5.0
        by[("model-api", name)] = Result(
            "model-api", name, rows, connections, ours, ours * rows, 1.0, p99, 0, 500, (ours,), c64_p99
        )
        by[("mlflow", name)] = Result("mlflow", name, rows, connections, 40, 40 * rows, 20.0, 30.0, 0, 600)
    by[("ceiling", "single row, c=64")] = Result(
        "ceiling", "single row, c=64", 1, 64, 6000, 6000, 10, 20, 0, 50
    )
    return by


def verdicts(lines: list[str]) -> dict[str, str]:
    return {cells[1].strip(): cells[2].strip() for cells in (line.split("|") for line in lines[2:])}


def test_every_target_passes_on_figures_that_meet_it() -> None:
    got = verdicts(targets(results(c64_req_s=3000, c64_p99=(25.0, 28.0, 90.0), rows_s_64=40 * 64 * 30)))
    assert len(got) == 6
    assert set(got.values()) == {"PASS"}


def test_each_target_fails_on_its_own_shortfall() -> None:
    short = targets(results(c64_req_s=2999, c64_p99=(25.0, 31.0, 90.0), rows_s_64=40 * 64 * 29.9))
    got = verdicts(short)
    assert got["single row, c=64: at least half the ceiling"] == "FAIL"
    assert got["single row, c=64: p99 at most 30 ms"] == "FAIL"
    assert got["64 rows, c=8: at least 30x mlflow's rows/s"] == "FAIL"
    assert got["64 different rows, c=8: at least 30x mlflow's rows/s"] == "FAIL"
    assert got["single row, c=1: p50 at most 1/10 of mlflow's"] == "PASS"  # 1 ms against 20
    assert got["single row, c=64: at least 40x mlflow's req/s"] == "PASS"  # 2,999 against 40
    assert "rounds: 25.0, 31.0, 90.0" in "".join(short)
