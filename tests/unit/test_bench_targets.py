"""make bench's verdict: each of the fast path's speed targets, PASS or FAIL, on the run's figures."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.bench import bench
from tests.bench.bench import SCENARIOS, Result, report, speed_targets

C1, C8, C64, ROWS, DIFFERENT = (name for name, _, _ in SCENARIOS)
MLFLOW = {
    C1: (40.0, 20.0),
    C8: (35.0, 150.0),
    C64: (75.0, 1500.0),
    ROWS: (45.0, 160.0),
    DIFFERENT: (50.0, 170.0),
}
"""mlflow's req/s and p50 (ms) by scenario: each its own, so a target read off another scenario
gives another verdict. At c=64, 40x mlflow is half the ceiling: 3,000 req/s meets both exactly."""
CEILING = 6000.0


def figures(
    server: str,
    name: str,
    req_s: float,
    p50: float,
    p99: float,
    errors: int = 0,
    p99s: tuple[float, ...] = (),
) -> Result:
    rows, connections = next((r, c) for n, r, c in SCENARIOS if n == name)
    return Result(
        server=server,
        scenario=name,
        rows=rows,
        connections=connections,
        req_s=req_s,
        rows_s=req_s * rows,
        p50_ms=p50,
        p99_ms=p99,
        errors=errors,
        rss_mb=500.0,
        rounds_req_s=(req_s,),
        rounds_p99_ms=p99s,
    )


def run(**ours: Any) -> dict[tuple[str, str], Result]:
    """A run's figures in which every target is met exactly at its bound, but where `ours` says
    otherwise (c1_p50, c64_req_s, c64_p99s, rows_x, different_x, ceiling, errors: {scenario: n};
    silent: the scenarios in which mlflow answered nothing, mlflow_errors: {scenario: n};
    ours_silent: the scenarios in which model-api answered nothing)."""
    by = {}
    errors = ours.get("errors", {})
    silent, mlflow_errors = ours.get("silent", set()), ours.get("mlflow_errors", {})
    ours_silent = ours.get("ours_silent", set())
    for name, _, _ in SCENARIOS:
        their_req_s, their_p50 = MLFLOW[name]
        req_s, p50, p99s = 1000.0, 1.0, (5.0,)
        if name == C1:
            p50 = ours.get("c1_p50", their_p50 / 10)
        elif name == C64:
            req_s = ours.get("c64_req_s", 40 * their_req_s)
            p99s = ours.get("c64_p99s", (12.0, 30.0, 90.0))
        elif name == ROWS:
            req_s = ours.get("rows_x", 30.0) * their_req_s
        elif name == DIFFERENT:
            req_s = ours.get("different_x", 30.0) * their_req_s
        p99 = sorted(p99s)[len(p99s) // 2]
        if name in ours_silent:
            req_s, p50, p99, p99s = 0.0, 0.0, 0.0, (0.0,)
        by[("model-api", name)] = figures("model-api", name, req_s, p50, p99, errors.get(name, 0), p99s)
        if name in silent:  # what wrk reports for a server that answered nothing
            by[("mlflow", name)] = figures("mlflow", name, 0.0, 0.0, 0.0)
        else:
            by[("mlflow", name)] = figures(
                "mlflow", name, their_req_s, their_p50, 2 * their_p50, mlflow_errors.get(name, 0)
            )
    ceiling = ours.get("ceiling", CEILING)
    by[("ceiling", C64)] = figures("ceiling", C64, ceiling, 10.0, 20.0)
    return by


def verdicts(lines: list[str]) -> dict[str, str]:
    return {cells[1].strip(): cells[2].strip() for cells in (line.split("|") for line in lines[2:])}


TARGETS = {
    "c1": "single row, c=1: p50 at most 1/10 of mlflow's",
    "c64 mlflow": "single row, c=64: at least 40x mlflow's req/s",
    "ceiling": "single row, c=64: at least half the ceiling",
    "p99": "single row, c=64: p99 at most 30 ms",
    "rows": "64 rows, c=8, the same request: at least 30x mlflow's rows/s",
    "different": "64 different rows, c=8, the same request: at least 30x mlflow's rows/s",
}


def test_every_target_passes_exactly_at_its_bound() -> None:
    got = verdicts(speed_targets(run()))
    assert got == {name: "PASS" for name in TARGETS.values()}


@pytest.mark.parametrize(
    ("short", "fails"),
    [
        ({"c1_p50": 2.01}, "c1"),  # mlflow's c=1 p50 is 20 ms
        ({"c64_req_s": 2999.0}, "c64 mlflow"),  # under half the ceiling too
        ({"ceiling": 6002.0}, "ceiling"),
        ({"c64_p99s": (12.0, 30.01, 90.0)}, "p99"),
        ({"rows_x": 29.99}, "rows"),
        ({"different_x": 29.99}, "different"),
        ({"errors": {ROWS: 3}}, "rows"),
    ],
)
def test_each_target_fails_on_its_own_shortfall(short: dict[str, Any], fails: str) -> None:
    got = verdicts(speed_targets(run(**short)))
    failed = {key for key, name in TARGETS.items() if got[name] == "FAIL"}
    assert failed == ({fails, "ceiling"} if fails == "c64 mlflow" else {fails})


def test_the_rounds_p99_and_the_errors_are_shown() -> None:
    text = "".join(speed_targets(run(c64_p99s=(25.0, 31.0, 90.0), errors={C1: 2})))
    assert "rounds: 25.0, 31.0, 90.0" in text
    assert "2 errors" in text


def test_a_yardstick_that_answered_nothing_or_failed_judges_nothing() -> None:
    got = verdicts(speed_targets(run(silent={C1, ROWS}, mlflow_errors={C64: 4}, ceiling=0.0)))
    assert got[TARGETS["c1"]] == got[TARGETS["rows"]] == "n/a (mlflow answered nothing)"
    assert got[TARGETS["c64 mlflow"]] == "n/a (mlflow had 4 errors)"
    assert got[TARGETS["ceiling"]] == "n/a (ceiling answered nothing)"
    assert got[TARGETS["p99"]] == got[TARGETS["different"]] == "PASS"  # their own yardsticks stand


def test_the_report_keeps_the_figures_when_mlflow_answered_nothing(tmp_path: Path) -> None:
    results = list(run(silent={name for name, _, _ in SCENARIOS}).values())
    report(results, {}, tmp_path, "the model itself")
    kept = json.loads((tmp_path / "bench.json").read_text())
    assert [r["req_s"] for r in kept["results"] if r["server"] == "mlflow"] == [0.0] * len(SCENARIOS)
    text = (tmp_path / "bench.md").read_text()
    assert "n/a rows/s, p50 n/a, p99 n/a, RSS 1.00x" in text


def test_a_model_api_that_answered_nothing_fails_every_target_whatever_its_yardsticks() -> None:
    """0 req/s and 0 ms would meet the latency targets; mlflow's silence must not hide ours."""
    got = verdicts(speed_targets(run(ours_silent={C1, C64}, silent={C1})))
    for key in ("c1", "c64 mlflow", "ceiling", "p99"):
        assert got[TARGETS[key]] == "FAIL (model-api answered nothing)", key
    assert got[TARGETS["rows"]] == "PASS"


def test_model_api_errors_fail_before_a_yardstick_that_judges_nothing() -> None:
    got = verdicts(speed_targets(run(errors={ROWS: 2}, silent={ROWS}, mlflow_errors={DIFFERENT: 1})))
    assert got[TARGETS["rows"]] == "FAIL"
    assert got[TARGETS["different"]] == "n/a (mlflow had 1 errors)"


def test_a_yardstick_without_a_p50_judges_nothing() -> None:
    """A latency target reads the yardstick's p50: 0 ms there is no answer, whatever its req/s."""
    by = run()
    by[("mlflow", C1)] = replace(by[("mlflow", C1)], p50_ms=0.0)
    assert verdicts(speed_targets(by))[TARGETS["c1"]] == "n/a (mlflow answered nothing)"


def test_the_report_writes_its_figures_before_judging_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(by: object) -> list[str]:
        raise RuntimeError("judging failed")

    monkeypatch.setattr(bench, "speed_targets", broken)
    with pytest.raises(RuntimeError):
        report(list(run().values()), {}, tmp_path, "the fast path")
    assert json.loads((tmp_path / "bench.json").read_text())["served_by"] == "the fast path"
    assert not (tmp_path / "bench.md").exists()


def test_the_report_survives_a_ceiling_that_answered_nothing(tmp_path: Path) -> None:
    report(list(run(ceiling=0.0).values()), {}, tmp_path, "the fast path")
    text = (tmp_path / "bench.md").read_text()
    assert "model-api reaches n/a of it (round by round: n/a)" in text
    assert "| single row, c=64: at least half the ceiling | n/a (ceiling answered nothing) |" in text


def test_a_round_that_answered_nothing_spoils_its_scenario() -> None:
    """A server that hung for one round (wrk: 0 req/s, 0 ms, no errors) pulls the medians down:
    p99s of (0, 25, 28, 35, 90) have a median of 28, under the 30 ms bound."""
    by = run(c64_p99s=(0.0, 25.0, 28.0, 35.0, 90.0))
    c64 = by[("model-api", C64)]
    by[("model-api", C64)] = replace(c64, rounds_req_s=(0.0, *(c64.req_s,) * 4))
    mlflow = by[("mlflow", ROWS)]
    by[("mlflow", ROWS)] = replace(mlflow, rounds_req_s=(mlflow.req_s, 0.0))
    got = verdicts(speed_targets(by))
    assert got[TARGETS["p99"]] == "FAIL (model-api answered nothing in a round)"
    assert got[TARGETS["rows"]] == "n/a (mlflow answered nothing in a round)"
    assert got[TARGETS["different"]] == "PASS"


def test_predict_with_records_is_reported_beside_the_same_request_and_judges_nothing(tmp_path: Path) -> None:
    """64 rows: the targets read model-api answering mlflow's own request; /predict with records is
    shown with its ratio but is no target."""
    by = run(rows_x=30.0)
    their = by[("mlflow", ROWS)]
    by[(bench.PREDICT, ROWS)] = figures(bench.PREDICT, ROWS, 20 * their.req_s, 3.0, 5.0)
    assert verdicts(speed_targets(by))[TARGETS["rows"]] == "PASS"
    report(list(by.values()), {}, tmp_path, "the fast path")
    text = (tmp_path / "bench.md").read_text()
    assert f"| {ROWS} | {bench.PREDICT} | 900 | 57600 |" in text
    assert "20.0x rows/s (records, no target)" in text
    assert "Sent in the 64-row scenarios: model-api and mlflow: the same dataframe_split body" in text
    assert "64-row scenarios" in json.loads((tmp_path / "bench.json").read_text())["requests"]


def test_predict_with_records_that_failed_says_so_instead_of_a_ratio(tmp_path: Path) -> None:
    """wrk counts error answers in its req/s: a ratio would flatter them."""
    by = run()
    their = by[("mlflow", ROWS)]
    by[(bench.PREDICT, ROWS)] = figures(bench.PREDICT, ROWS, 100 * their.req_s, 3.0, 5.0, errors=500)
    by[(bench.PREDICT, DIFFERENT)] = figures(bench.PREDICT, DIFFERENT, 0.0, 0.0, 0.0)
    report(list(by.values()), {}, tmp_path, "the fast path")
    text = (tmp_path / "bench.md").read_text()
    assert "| 500 | 500 | 500 errors |" in text
    assert "| answered nothing |" in text
    assert "rows/s (records" not in text
