"""`make overload`: one worker under an open-loop spike of 3x its capacity, then back to half of it.

The server runs one worker pinned to core 0 (as in `make bench`); the open-loop generator
(tests/bench/openloop.py) runs pinned to core 1. Steps: measure capacity with a short closed-loop
saturation run (wrk, 64 connections, single row), then offer, back to back and open-loop, half the
capacity for the baseline, ``--factor`` (3) times it for the spike, and half of it for the tail, each
request with a 10 s client timeout. /health is polled every 200 ms throughout, and /metrics every
second (the shed, in-flight and queue metrics are reported when the server exports them).

Reported: admitted (200) req/s during the spike (answers completed in it) and the p99 of the
requests due in it, the share refused (503) and the p99 time of a refusal, client timeouts, 5xx
other than 503, connection errors, whether /health always answered, and the recovery time: from
the spike's end to the first of four 250 ms windows of the tail in a row (by due time) with only
200s and a p99 within 1.5x the baseline's p99 (a window holds a tenth of the baseline's samples,
hence the slack), from which the rest of the tail, as a whole, has only 200s and a p99 within that
line too, with no window past twice the line (`recovery_s`). Each target prints PASS or FAIL;
results go to stdout, bench-results/overload.json and bench-results/overload.md. The exit code is 0
whatever the targets say (today's server fails them; the measurement is the product), 1 if the run
itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.bench.bench import ROOT, free_port, server, wrk

WINDOW_S = 0.25
"""Recovery is judged on windows of this many seconds of the tail, by due time."""
RECOVERY_SLACK = 1.5
"""A tail window is normal when its p99 is within this factor of the baseline's p99."""
RECOVERY_RUN = 4
"""Recovered: this many normal windows in a row (1 s), and the rest of the tail normal as a whole."""
RECOVERY_CEILING = 2.0
"""...and no later window's p99 past this many times the line (noise crosses the line, not this)."""
HEALTH_EVERY_S = 0.2
HEALTH_TIMEOUT_S = 1.0
"""A /health poll counts as answered when it is 200 within this time."""
LAG_LIMIT_S = 0.01
"""If the generator's p99 send lag passes this, it fell behind and the run says so."""
GAUGES = ("requests_in_flight", "queue_depth", "http_requests_inprogress")
"""Gauges whose peak (summed over labels, per scrape) the report gives."""
FLOOR_S = 5.0
"""Seconds of the spike's rate offered to the floor server (tests/bench/floor.py); the first is not
counted (connections warming)."""


@dataclass
class Poller:
    """Polls /health and /metrics in a thread until stopped; keeps what it saw."""

    base: str
    health: list[tuple[float, int, float]] = field(default_factory=list)  # (t, status, seconds)
    gauges: dict[str, float] = field(default_factory=dict)  # peak of each gauge seen
    shed_start: dict[str, float] = field(default_factory=dict)
    shed_end: dict[str, float] = field(default_factory=dict)
    lag_start: dict[str, float] = field(default_factory=dict)
    lag_end: dict[str, float] = field(default_factory=dict)
    """The server's `event_loop_lag_seconds` buckets (cumulative count by `le`) at the first and
    the latest scrape."""
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, t0: float) -> None:
        with httpx.Client(timeout=HEALTH_TIMEOUT_S) as client:
            self.shed_start = self.scrape(client) or {}
            self.lag_start = dict(self.lag_end)
            next_metrics = time.monotonic()
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    status = client.get(f"{self.base}/health").status_code
                except httpx.HTTPError:
                    status = 0
                self.health.append((start - t0, status, time.monotonic() - start))
                if time.monotonic() >= next_metrics:
                    next_metrics += 1.0
                    self.shed_end = self.scrape(client) or self.shed_end
                self.stop.wait(max(0.0, HEALTH_EVERY_S - (time.monotonic() - start)))
            self.shed_end = self.scrape(client) or self.shed_end

    def scrape(self, client: httpx.Client) -> dict[str, float] | None:
        """Counters of shed requests by reason; the gauges' peaks go to self.gauges, the loop lag's
        buckets to self.lag_end."""
        try:
            text = client.get(f"{self.base}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        shed: dict[str, float] = {}
        gauges: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "requests_shed_total":
                    reason = sample.labels.get("reason", "")
                    shed[reason] = shed.get(reason, 0.0) + sample.value
                elif sample.name in GAUGES:
                    gauges[sample.name] = gauges.get(sample.name, 0.0) + sample.value
                elif sample.name == "event_loop_lag_seconds_bucket":
                    le = sample.labels.get("le", "")
                    self.lag_end[le] = sample.value
        for name, value in gauges.items():
            self.gauges[name] = max(self.gauges.get(name, 0.0), value)
        return shed


def lag_note(start: dict[str, float], end: dict[str, float]) -> str:
    """The server's event loop lag over the run (`event_loop_lag_seconds`, a tick every 100 ms by
    default): how many ticks ran more than 10 ms and 50 ms late. A refusal arriving then waits
    about that long before the loop reads it. A late loop ticks less often: the shares understate
    the time the loop was late."""
    ticks = end.get("+Inf", 0.0) - start.get("+Inf", 0.0)
    if ticks <= 0:
        return "not exported"

    def over(le: str) -> float:
        return (ticks - (end.get(le, 0.0) - start.get(le, 0.0))) / ticks

    return f"{ticks:.0f} ticks, {over('0.01'):.1%} over 10 ms late, {over('0.05'):.1%} over 50 ms"


def p99_ms(values: np.ndarray) -> float:
    return float(np.percentile(values, 99) * 1000) if len(values) else math.nan


def recovery_s(
    due: np.ndarray, latency: np.ndarray, status: np.ndarray, start: float, end: float, limit_s: float
) -> float | None:
    """Seconds from ``start`` to the first of ``RECOVERY_RUN`` normal windows in a row (only 200s,
    p99 within ``limit_s``) from which the rest of [start, end) is normal as a whole (only 200s,
    a p99 within ``limit_s``) and no window's p99 passes ``RECOVERY_CEILING`` times the line;
    None if no such window.

    Not "until every later window is normal": at half capacity a 250 ms window's p99 is its 4th
    slowest request, and the baseline's own windows pass the line now and then (in one run, 16
    baseline windows ranged 4-19 ms against a line of 20 ms), so that criterion reported the last
    noisy window of the tail, however long ago the spike's backlog had cleared. A backlog clears
    once and stays cleared; a tail that stays slow or keeps refusing fails the check of the rest
    as a whole, and one that stalls later (a window past twice the line) fails the ceiling."""
    edges = np.arange(start, end - 1e-9, WINDOW_S)
    normal, p99s = [], []
    for lo in edges:
        sel = (due >= lo) & (due < lo + WINDOW_S)
        ok = sel & (status == 200)
        p99 = float(np.percentile(latency[ok], 99)) if ok.any() else 0.0  # none answered: caught below
        p99s.append(p99)
        normal.append(bool(sel.any()) and int(ok.sum()) == int(sel.sum()) and p99 <= limit_s)
    for i, lo in enumerate(edges[: max(0, len(edges) - RECOVERY_RUN + 1)]):
        if not all(normal[i : i + RECOVERY_RUN]) or max(p99s[i:]) > RECOVERY_CEILING * limit_s:
            continue
        rest = (due >= lo) & (due < end)
        if bool((status[rest] == 200).all()) and float(np.percentile(latency[rest], 99)) <= limit_s:
            return float(lo - start)
    return None


def analyse(
    data: dict[str, np.ndarray], baseline_s: float, spike_s: float, tail_s: float
) -> dict[str, object]:
    due, latency, status, lag = data["due"], data["latency"], data["status"], data["lag"]
    spike_end = baseline_s + spike_s
    done = due + np.nan_to_num(latency, nan=np.inf)
    base = (due >= min(1.0, baseline_s / 2)) & (due < baseline_s)  # the first second warms connections
    spike = (due >= baseline_s) & (due < spike_end)
    ok, refused = status == 200, status == 503
    base_p99 = p99_ms(latency[base & ok])
    other_5xx = (status >= 500) & ~refused
    others = sorted({int(s) for s in status[(status > 0) & ~ok & ~refused & ~other_5xx]})
    recovered = recovery_s(
        due, latency, status, spike_end, spike_end + tail_s, base_p99 / 1000 * RECOVERY_SLACK
    )
    return {
        "offered_spike_req_s": float(spike.sum() / spike_s),
        # answered 200 while the spike lasted, by completion time: the throughput under it
        "admitted_req_s": float((ok & (done >= baseline_s) & (done < spike_end)).sum() / spike_s),
        "admitted_p50_ms": float(np.percentile(latency[spike & ok], 50) * 1000)
        if (spike & ok).any()
        else math.nan,
        "admitted_p99_ms": p99_ms(latency[spike & ok]),
        "refused_share": float((spike & refused).sum() / max(1, spike.sum())),
        "refusal_p99_ms": p99_ms(latency[refused]),
        "refused_total": int(refused.sum()),
        "client_timeouts": int((status == 0).sum()),
        "other_5xx": int(other_5xx.sum()),
        "other_5xx_codes": sorted({int(s) for s in status[other_5xx]}),
        "other_statuses": others,
        "connection_errors": int((status == -1).sum()),
        "not_sent_connection_cap": int((status == -2).sum()),
        "baseline_p99_ms": base_p99,
        # Little's law: the mean number in flight is the sum of the latencies over the time; at half
        # capacity it is a guide for the autoscaler's per-pod in-flight threshold.
        "baseline_in_flight": float(
            np.nansum(latency[base]) / max(1e-9, baseline_s - min(1.0, baseline_s / 2))
        ),
        "tail_p99_ms": p99_ms(latency[(due >= spike_end) & ok]),
        "recovery_s": recovered,
        "generator_lag_p99_ms": p99_ms(lag[status != -2]),
        "peak_connections": int(data["peak_connections"]),
        "requests": len(due),
    }


def floor_note(floor: object) -> str:
    """What the report says of the refusal floor (`refusal_floor`), if it was measured."""
    if not isinstance(floor, dict):
        return ""
    return (
        f" (this machine's floor, a server refusing every request at once at the spike's rate with "
        f"the same generator: p50 {floor['p50']:.2f} ms, p99 {floor['p99']:.2f} ms)"
    )


def verdicts(r: dict[str, object], health_ok: bool) -> list[tuple[str, bool, str]]:
    def num(key: str) -> float:
        value = r[key]
        return math.nan if value is None else float(value)  # type: ignore[arg-type]

    recovery = r["recovery_s"]
    measured_floor = r.get("refusal_floor_ms")
    floor = f" (floor {measured_floor['p99']:.2f} ms)" if isinstance(measured_floor, dict) else ""
    return [
        ("admitted p99 <= 100 ms", num("admitted_p99_ms") <= 100, f"{num('admitted_p99_ms'):.1f} ms"),
        (
            "refusal p99 < 5 ms",
            r["refused_total"] == 0 or num("refusal_p99_ms") < 5,
            f"{num('refusal_p99_ms'):.2f} ms over {r['refused_total']} refusals{floor}"
            if r["refused_total"]
            else "no refusals",
        ),
        ("0 client timeouts", r["client_timeouts"] == 0, str(r["client_timeouts"])),
        ("0 5xx other than 503", r["other_5xx"] == 0, f"{r['other_5xx']} {r['other_5xx_codes']}"),
        (
            "0 connection errors or unsent",
            r["connection_errors"] == 0 and r["not_sent_connection_cap"] == 0,
            f"{r['connection_errors']} errors, {r['not_sent_connection_cap']} unsent at the connection cap",
        ),
        ("/health answered throughout", health_ok, ""),
        (
            "normal latency within 1 s of the spike's end",
            recovery is not None and num("recovery_s") <= 1.0,
            "not within the tail" if recovery is None else f"{num('recovery_s'):.2f} s",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spike", type=float, default=30.0, help="seconds of the spike")
    parser.add_argument("--tail", type=float, default=10.0, help="seconds at half capacity after it")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds at half capacity before it")
    parser.add_argument("--factor", type=float, default=3.0, help="the spike offers this times capacity")
    parser.add_argument("--capacity", type=float, default=0.0, help="req/s; 0 measures it with wrk")
    parser.add_argument("--capacity-seconds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request, s")
    parser.add_argument("--route", default="/predict", help='a route taking {"instances": [...]}')
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MODEL_API_X=VALUE",
        help="a server setting for this run (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument(
        "--front",
        type=int,
        default=0,
        metavar="BOUND",
        help="run the worker unbounded behind tests/bench/front.py, which forwards at most BOUND "
        "POSTs at once and refuses the rest, on the worker's core (an experiment: not the server)",
    )
    parser.add_argument(
        "--in-worker",
        action="store_true",
        help="with --front: run the front in a thread of the worker's process (one GIL)",
    )
    parser.add_argument(
        "--switch-interval", type=float, default=0.0, help="with --in-worker: sys.setswitchinterval, s"
    )
    parser.add_argument(
        "--no-floor",
        dest="floor",
        action="store_false",
        help="skip measuring the machine's refusal floor (tests/bench/floor.py) after the run",
    )
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: `make overload` installs it")
    args.out.mkdir(parents=True, exist_ok=True)
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})  # the /health and /metrics poller stays off the server's core
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_API_")}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT}/data/mlflow.db")
    port = free_port()
    env.update({"MODEL_API_PORT": str(port), "MODEL_API_HOST": "127.0.0.1", "MODEL_API_WORKERS": "1"})
    env.update(dict(item.split("=", 1) for item in args.set))
    base = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as servers:
        if args.front:
            env["MODEL_API_MAX_IN_FLIGHT"] = "0"  # the front bounds what reaches the worker
        worker = [str(bin_dir / "model-api"), "serve"]
        if args.front and args.in_worker:
            worker, port = [sys.executable, "-m", "tests.bench.front", "--in-worker"], free_port()
            worker += ["--port", str(port), "--bound", str(args.front)]
            worker += ["--switch-interval", str(args.switch_interval)] if args.switch_interval else []
            base = f"http://127.0.0.1:{port}"
        servers.enter_context(server(worker, env, f"{base}/ready", args.out / "overload.log"))
        if args.front and not args.in_worker:
            upstream, port = port, free_port()
            base = f"http://127.0.0.1:{port}"
            front = [sys.executable, "-m", "tests.bench.front", "--port", str(port)]
            front += ["--upstream", str(upstream), "--bound", str(args.front)]
            servers.enter_context(server(front, dict(os.environ), f"{base}/ready", args.out / "front.log"))
        example = httpx.get(f"{base}/model/info", timeout=5).json()["input_example"]
        body = args.out / "body-overload-1.json"
        body.write_text(json.dumps({"instances": [example[0]]}))
        url = f"{base}{args.route}"
        assert (
            httpx.post(
                url, content=body.read_bytes(), headers={"content-type": "application/json"}, timeout=10
            ).status_code
            == 200
        )
        capacity = args.capacity
        if not capacity:
            wrk(url, [body], 64, 2)  # warm-up
            saturated = wrk(url, [body], 64, args.capacity_seconds)
            # Only answers count: with a bound below 64, wrk's rate includes the refusals.
            capacity = saturated["req_s"] - saturated["errors"] / args.capacity_seconds
        low, high = capacity / 2, capacity * args.factor
        print(
            f"capacity {capacity:.0f} req/s (closed loop, 64 connections); open loop: {low:.0f} req/s "
            f"for {args.baseline:g} s, {high:.0f} req/s for {args.spike:g} s, {low:.0f} req/s for "
            f"{args.tail:g} s",
            flush=True,
        )
        poller = Poller(base)
        result = args.out / "overload-requests.npz"
        phases = [(low, args.baseline), (high, args.spike), (low, args.tail)]
        thread = threading.Thread(target=poller.run, args=(time.monotonic(),), daemon=True)
        thread.start()
        try:
            openloop(url, body, phases, args.timeout, result)
        finally:
            poller.stop.set()
            thread.join(timeout=10)
    with np.load(result) as npz:
        r = analyse(dict(npz), args.baseline, args.spike, args.tail)
    r["refusal_floor_ms"] = refusal_floor(high, body, args) if args.floor else None
    r["capacity_req_s"] = capacity
    r["health_polls"] = len(poller.health)
    r["health_failed"] = sum(
        1 for _, status, seconds in poller.health if status != 200 or seconds > HEALTH_TIMEOUT_S
    )
    r["health_p99_ms"] = p99_ms(np.array([s for _, _, s in poller.health]))
    r["shed_by_reason"] = {k: v - poller.shed_start.get(k, 0.0) for k, v in poller.shed_end.items()}
    r["gauge_peaks"] = poller.gauges
    r["loop_lag"] = lag_note(poller.lag_start, poller.lag_end)
    report(r, verdicts(r, r["health_failed"] == 0 and len(poller.health) > 0), args)
    return 0


def openloop(url: str, body: Path, phases: list[tuple[float, float]], timeout_s: float, out: Path) -> None:
    """Run the open-loop generator (tests/bench/openloop.py) on core 1: `phases` of (req/s, s)."""
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "tests.bench.openloop", "--url", url]
    cmd += ["--body", str(body), "--timeout", str(timeout_s), "--out", str(out)]
    for rate, seconds in phases:
        cmd += ["--phase", f"{rate}:{seconds}"]
    total = sum(seconds for _, seconds in phases)
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=total + timeout_s + 120)


def refusal_floor(rate: float, body: Path, args: argparse.Namespace) -> dict[str, float]:
    """p50 and p99 (ms) of a refusal from a server that refuses every request at once
    (tests/bench/floor.py, on the worker's core), with the same generator at `rate` req/s: the part
    of `refusal_p99_ms` that is the machine's and the generator's, not the worker's."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.bench.floor", "--port", str(port), "--seconds", str(FLOOR_S + 60)]
    base = f"http://127.0.0.1:{port}"
    with server(cmd, dict(os.environ), f"{base}/ready", args.out / "overload-floor.log"):
        result = args.out / "overload-floor.npz"
        openloop(f"{base}{args.route}", body, [(rate, FLOOR_S)], args.timeout, result)
    with np.load(result) as npz:
        refused = (npz["status"] == 503) & (npz["due"] >= 1.0)
        latency = npz["latency"][refused]
    if not latency.size:
        raise RuntimeError("the floor server answered no request with 503")
    return {"p50": float(np.percentile(latency, 50) * 1000), "p99": p99_ms(latency)}


def report(r: dict[str, object], checks: list[tuple[str, bool, str]], args: argparse.Namespace) -> None:
    where = "in a thread of the worker" if args.in_worker else "in its own process"
    through = (
        f", behind tests/bench/front.py {where} (at most {args.front} POSTs forwarded at once, the rest "
        "refused)"
        if args.front
        else ""
    )
    lines = [
        f"One worker on core 0{through}, open-loop generator on core 1; capacity "
        f"{r['capacity_req_s']:.0f} req/s (wrk, 64 connections); spike "
        f"{r['offered_spike_req_s']:.0f} req/s offered for {args.spike:g} s.",
        "",
        f"- admitted {r['admitted_req_s']:.0f} req/s, p50 {r['admitted_p50_ms']:.1f} ms, p99 "
        f"{r['admitted_p99_ms']:.1f} ms (baseline p99 {r['baseline_p99_ms']:.1f} ms, tail p99 "
        f"{r['tail_p99_ms']:.1f} ms)",
        f"- requests in flight at half capacity (Little's law, baseline): {r['baseline_in_flight']:.1f}",
        f"- refused (503): {r['refused_share']:.1%} of the spike, p99 {r['refusal_p99_ms']:.2f} ms"
        + floor_note(r["refusal_floor_ms"]),
        f"- client timeouts {r['client_timeouts']}, other 5xx {r['other_5xx']} {r['other_5xx_codes']}, "
        f"other statuses {r['other_statuses']}, connection errors {r['connection_errors']}, "
        f"unsent at the connection cap {r['not_sent_connection_cap']}",
        f"- /health: {r['health_polls']} polls, {r['health_failed']} not answered 200 within "
        f"{HEALTH_TIMEOUT_S:g} s, p99 {r['health_p99_ms']:.1f} ms",
        f"- shed by reason (server metrics): {r['shed_by_reason'] or 'not exported'}; gauge peaks: "
        f"{r['gauge_peaks'] or 'not exported'}",
        f"- event loop lag over the run (server metrics, baseline to tail): {r['loop_lag']}",
        f"- generator: {r['requests']} requests, p99 send lag {r['generator_lag_p99_ms']:.2f} ms, peak "
        f"{r['peak_connections']} connections",
        "",
        "| target | result | measured |",
        "|---|---|---|",
        *(f"| {name} | {'PASS' if ok else 'FAIL'} | {measured} |" for name, ok, measured in checks),
    ]
    if float(r["generator_lag_p99_ms"]) > LAG_LIMIT_S * 1000:  # type: ignore[arg-type]
        lines += [
            "",
            "WARNING: the generator fell behind its schedule (p99 lag above "
            f"{LAG_LIMIT_S * 1000:.0f} ms): the offered rate was lower than asked.",
        ]
    text = "\n".join(lines)
    print("\n" + text)
    (args.out / "overload.md").write_text(text + "\n")
    (args.out / "overload.json").write_text(
        json.dumps(
            {**r, "targets": [{"target": n, "pass": ok, "measured": m} for n, ok, m in checks]}, indent=2
        )
    )


if __name__ == "__main__":
    sys.exit(main())
