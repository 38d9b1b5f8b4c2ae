"""`make bench`: our service against `mlflow models serve` on the same registered model, side by side.

Each server runs one worker pinned to core 0 with taskset; wrk runs pinned to core 1. All three
servers (ours, mlflow's and the ceiling, a bare FastAPI endpoint that only parses the JSON) are up
at once, idle but for the one measured, and every scenario is measured in ROUNDS rounds in which
they take turns (`measure`), `--seconds` (15) per server in all after a warm-up: what the shared
machine does meanwhile falls on each of them alike, and the ratios compare like with like. The
same run also measures the in-process limit (the model's own predict for 1 and 64 rows). Results
go to stdout, bench-results/bench.json and bench-results/bench.md. Then the cost of watching the
model (watchbench.py: inference logs at 100% to a file and the shadow on, against both off, in
ROUNDS interleaved rounds), alone with `--watch` (`--baseline REF` adds the source of a git ref
as 'before', `--rounds N`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.bench import watchbench

ROOT = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("post.lua")
SCENARIOS = [
    ("single row, c=1", 1, 1),
    ("single row, c=8", 1, 8),
    ("single row, c=64", 1, 64),
    ("64 rows, c=8", 64, 8),
    (DIFFERENT := "64 different rows, c=8", 64, 8),
]
"""(name, rows a request, connections). Every scenario repeats one body built from the model's input
example, except DIFFERENT: BODIES bodies of 64 rows each, none the same, sent in turn. A repeated
body flatters a tree walk that branches (the processor learns the paths of the same few rows):
with DIFFERENT the server walks the trees as it would for real clients.

In every scenario mlflow is sent its own request format (`dataframe_split` on `/invocations`). In
the 64-row scenarios model-api is sent the very same bytes on the same route, so that the ratio
compares two servers answering one request; `/predict` with records (`instances`: every row an
object, its names repeated, a body 2.9 times as large; its answer also names the model version and
the request id) is measured beside it as PREDICT, for information, judged by no target. In the
single-row scenarios model-api is sent records on `/predict`, as the ceiling is: there the two
servers' requests differ."""
PREDICT = "model-api /predict"
"""The name under which model-api's `/predict` with records is reported in the 64-row scenarios."""
REQUESTS = {
    "single-row scenarios": "model-api: records (instances) on /predict; mlflow: dataframe_split on "
    "/invocations",
    "64-row scenarios": "model-api and mlflow: the same dataframe_split body on /invocations; "
    f"{PREDICT}: the same rows as records (instances) on /predict, judged by no target",
}
"""What each server is sent, written to the report and to bench.json."""
BODIES = 32
ROUNDS = 5
"""Rounds per scenario. A server's req/s is its mean over the rounds, its p50 and p99 the median of
its rounds' (`measure`). Rounds of one server differed by 20% here: one 15 s run per server,
minutes apart, put model-api at 36-46% of the ceiling on the same code. Within one run, taking
turns in three rounds of 5 s, the same server still got 1,991-3,224 req/s at c=64 and the ceiling
3,203-5,398 (2026-12-02): the machine's speed changes within seconds. With five shorter rounds a
slow spell falls on every server's turns alike more often, and a median p99 needs three slow
rounds to move."""


@dataclass
class Result:
    server: str
    scenario: str
    rows: int
    connections: int
    req_s: float
    rows_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    rounds_req_s: tuple[float, ...] = ()
    """Each round's req/s, in order (`measure`)."""
    rounds_p99_ms: tuple[float, ...] = ()
    """Each round's p99 (ms), in order: one noisy round shows here, not in the median."""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(pid: int) -> list[Any]:
    """A process and all its descendants (psutil processes), or none once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_total(pid: int, measure: Callable[[Any], float]) -> float:
    """`measure` summed over a process and its descendants, skipping any that exit meanwhile."""
    import psutil

    total = 0.0
    for proc in process_tree(pid):
        try:
            total += measure(proc)
        except psutil.NoSuchProcess:
            continue
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    return tree_total(pid, lambda proc: proc.memory_info().rss) / 2**20


@contextmanager
def server(cmd: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", "0", *cmd],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError(f"{cmd} did not come up:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def to_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    value, unit = float(m[1]), m[2]
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, bodies: list[Path], connections: int, seconds: int) -> dict[str, float]:
    """POST `bodies` in turn (post.lua) for `seconds`: req/s, p50 and p99 (ms) and errors."""
    env = {**os.environ, "BODY_FILES": " ".join(str(b) for b in bodies)}
    cmd = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
    ]
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    req_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m[1])
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return {"req_s": req_s, "p50_ms": p50, "p99_ms": p99, "errors": errors}


@dataclass(frozen=True)
class Target:
    """A server under test: its process, the URL it is sent requests at, its bodies by scenario."""

    proc: subprocess.Popen[bytes]
    url: str
    bodies: dict[str, list[Path]]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and all its descendants."""
    return tree_total(pid, lambda proc: sum(proc.cpu_times()[:2]))  # user + system


def settle(pid: int, quiet_s: float = 0.3, most_s: float = 20.0) -> None:
    """Wait until the server has finished what wrk left in flight (its CPU time stays still for
    `quiet_s`), so that it does not spend the next server's turn on it: mlflow holds 64 queued
    requests, about 2 s of work, when wrk stops at c=64."""
    deadline = time.monotonic() + most_s
    last = tree_cpu_s(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = tree_cpu_s(pid)
        if now - last < 0.02 * quiet_s:
            return
        last = now


def measure(
    targets: dict[str, Target], scenario: tuple[str, int, int], seconds: int, rounds: int = ROUNDS
) -> list[Result]:
    """One scenario against every target, in `rounds` rounds of `seconds / rounds` each in which the
    targets take turns (after a warm-up of each), each round in another order, so that a trend in
    the machine's load favours none: their req/s is the mean over the rounds, p50 and p99 the median
    of the rounds', errors the sum."""
    name, rows, connections = scenario
    for target in targets.values():
        wrk(target.url, target.bodies[name], connections, 3)  # warm-up
        settle(target.proc.pid)
    runs: dict[str, list[dict[str, float]]] = {server_name: [] for server_name in targets}
    each = max(1, round(seconds / rounds))
    order = list(targets)
    for round_ in range(rounds):
        turn = round_ % len(order)
        for server_name in order[turn:] + order[:turn]:
            target = targets[server_name]
            runs[server_name].append(wrk(target.url, target.bodies[name], connections, each))
            settle(target.proc.pid)
    results = []
    for server_name, target in targets.items():
        stats = runs[server_name]
        req_s = statistics.fmean(r["req_s"] for r in stats)
        p50 = statistics.median(r["p50_ms"] for r in stats)
        p99 = statistics.median(r["p99_ms"] for r in stats)
        errors = int(sum(r["errors"] for r in stats))
        rss = tree_rss_mb(target.proc.pid)
        results.append(
            Result(
                server_name,
                name,
                rows,
                connections,
                req_s,
                req_s * rows,
                p50,
                p99,
                errors,
                rss,
                tuple(r["req_s"] for r in stats),
                tuple(r["p99_ms"] for r in stats),
            )
        )
        each_round = ", ".join(f"{r['req_s']:.0f}" for r in stats)
        each_p99 = ", ".join(f"{r['p99_ms']:.1f}" for r in stats)
        print(
            f"  {server_name:>18} {name:<18} {req_s:>9.0f} req/s ({each_round})  p50 {p50:.1f} ms  "
            f"p99 {p99:.1f} ms ({each_p99})  errors {errors}  rss {rss:.0f} MB",
            flush=True,
        )
    return results


def answers(url: str, body: Path) -> list[object]:
    """The predictions a server gives for one 64-row body."""
    got = httpx.post(url, content=body.read_bytes(), headers={"content-type": "application/json"}, timeout=30)
    predictions: list[object] = got.json()["predictions"]
    assert len(predictions) == 64, got.text[:200]
    return predictions


def different_records(example: list[dict[str, object]], n: int, seed: int = 0) -> list[dict[str, object]]:
    """`n` rows unlike one another, each column drawn from what the input example holds: numbers
    uniformly between the column's smallest and largest (integers stay integers; floats keep two
    decimals), other values picked among the example's."""
    rng = random.Random(seed)
    columns = {name: [r[name] for r in example] for name in example[0]}
    rows: list[dict[str, object]] = [{} for _ in range(n)]
    for name, values in columns.items():
        numbers = [v for v in values if type(v) in (int, float)]
        for row in rows:
            if len(numbers) == len(values) and all(type(v) is int for v in numbers):
                row[name] = rng.randint(min(numbers), max(numbers))  # type: ignore[type-var]
            elif len(numbers) == len(values):
                row[name] = round(rng.uniform(min(numbers), max(numbers)), 2)  # type: ignore[type-var]
            else:
                row[name] = rng.choice(values)
    return rows


def _records(frame: Any) -> list[dict[str, object]]:
    """A DataFrame's rows as request records (NaN as null)."""
    return [{k: (None if v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]


def _median_ms(call: Callable[[], object], repeat: int = 40) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def in_process(tracking_uri: str, uri: str) -> dict[str, float]:
    """The model's own predict (the raw sklearn pipeline on a DataFrame) and the served fast path
    (`fastserve.compile_for`, from the request's columns), median of many calls each."""
    from model_api.contract import Batch
    from model_api.fastserve import compile_for
    from model_api.registry import load_model
    from model_api.settings import Settings
    from model_api.signature import model_spec

    loaded = load_model(uri, tracking_uri)
    assert loaded.input_example is not None
    schema = model_spec(loaded).contract
    fast, _ = compile_for(loaded.model, schema, Settings(fast_path="auto"))
    out = {}
    for n in (1, 64):
        frame = loaded.input_example.sample(n=n, replace=True, random_state=0).reset_index(drop=True)
        out[f"predict_{n}_rows_ms"] = _median_ms(functools.partial(loaded.model.predict, frame))
        if fast is not None and schema is not None:
            batch: Batch = schema.parse_records(_records(frame), max_rows=n)
            out[f"fast_{n}_rows_ms"] = _median_ms(functools.partial(fast.evaluate, batch.columns, False))
    if fast is not None and schema is not None:  # 64 rows none the same (the DIFFERENT scenario's)
        batch = schema.parse_records(different_records(_records(loaded.input_example), 64), max_rows=64)
        out["fast_64_different_rows_ms"] = _median_ms(functools.partial(fast.evaluate, batch.columns, False))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument(
        "--watch", action="store_true", help="only the cost of inference logs and the shadow (watchbench.py)"
    )
    parser.add_argument("--baseline", help="with --watch: a git ref without the watch, measured as 'before'")
    parser.add_argument("--rounds", type=int, default=3, help="with --watch: interleaved rounds")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: `make bench` installs it")
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT}/data/mlflow.db")
    uri = "models:/ChurnPredictor@champion"
    args.out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_API_")}
    base_env["MLFLOW_TRACKING_URI"] = tracking_uri
    base_env["PATH"] = f"{bin_dir}:{base_env.get('PATH', '')}"  # mlflow runs `uvicorn` by name

    if args.watch:
        watchbench.run(ROOT, base_env, args.out, args.seconds, args.rounds, args.baseline)
        return 0

    print("in-process limit ...", flush=True)
    limit = in_process(tracking_uri, uri)
    for label, key in (("model predict", "predict"), ("fast path", "fast")):
        if f"{key}_1_rows_ms" in limit:
            one, many = limit[f"{key}_1_rows_ms"], limit[f"{key}_64_rows_ms"]
            print(f"  {label:<14} 1 row {one:.2f} ms, 64 rows {many:.2f} ms")
    if "fast_64_different_rows_ms" in limit:
        print(f"  {'fast path':<14} 64 different rows {limit['fast_64_different_rows_ms']:.2f} ms")

    info_port = free_port()
    ours_env = {**base_env, "MODEL_API_PORT": str(info_port), "MODEL_API_HOST": "127.0.0.1"}
    ours_url = f"http://127.0.0.1:{info_port}"
    results: list[Result] = []
    with ExitStack() as running:
        ours = running.enter_context(
            server(
                [str(bin_dir / "model-api"), "serve"], ours_env, f"{ours_url}/ready", args.out / "ours.log"
            )
        )
        info = httpx.get(f"{ours_url}/model/info", timeout=5).json()
        served_by = f"fast path ({info['fast_path']})" if info.get("fast_path") else "the model itself"
        # the reason begins with the fast path's description: printed once
        path = "the fast path" if info.get("fast_path") else served_by
        print(f"  served by {path}: {info.get('fast_path_reason', '')}", flush=True)
        names = [c["name"] for c in info["inputs"]]
        example = info["input_example"]
        repeated = {n: [example[i % len(example)] for i in range(n)] for n in (1, 64)}
        different = different_records(example, BODIES * 64)
        requests = {name: [repeated[rows]] for name, rows, _ in SCENARIOS if name != DIFFERENT}
        requests[DIFFERENT] = [different[i * 64 : (i + 1) * 64] for i in range(BODIES)]
        bodies: dict[str, dict[str, list[Path]]] = {"ours": {}, "mlflow": {}, "ceiling": {}}
        (args.out / "bodies").mkdir(exist_ok=True)
        for k, (scenario, sent) in enumerate(requests.items()):
            for server_name in bodies:
                bodies[server_name][scenario] = []
                for i, recs in enumerate(sent):
                    payload = (
                        {"dataframe_split": {"columns": names, "data": [[r[c] for c in names] for r in recs]}}
                        if server_name == "mlflow"
                        else {"instances": recs}
                    )
                    path = args.out / "bodies" / f"{server_name}-scenario{k}-{i}.json"
                    path.write_text(json.dumps(payload))
                    bodies[server_name][scenario].append(path)
        checked = ("64 rows, c=8", DIFFERENT)  # the answers both servers must agree on
        expected = [answers(f"{ours_url}/predict", bodies["ours"][name][0]) for name in checked]
        same = [answers(f"{ours_url}/invocations", bodies["mlflow"][name][0]) for name in checked]
        assert same == expected, "model-api's /predict and /invocations give the same answers"

        port = free_port()
        mlflow_url = f"http://127.0.0.1:{port}"
        mlflow_cmd = [
            str(bin_dir / "mlflow"),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            "1",
        ]
        mlflow = running.enter_context(
            server(mlflow_cmd, base_env, f"{mlflow_url}/ping", args.out / "mlflow.log")
        )
        got = [answers(f"{mlflow_url}/invocations", bodies["mlflow"][name][0]) for name in checked]
        assert got == expected, "both servers give the same answers"

        port = free_port()
        ceiling_url = f"http://127.0.0.1:{port}"
        ceiling_cmd = [
            str(bin_dir / "uvicorn"),
            "tests.bench.ceiling:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        ceiling_env = {**base_env, "PYTHONPATH": str(ROOT)}
        ceiling = running.enter_context(
            server(ceiling_cmd, ceiling_env, f"{ceiling_url}/docs", args.out / "ceiling.log")
        )

        targets = {
            "model-api": Target(ours, f"{ours_url}/predict", bodies["ours"]),
            "mlflow": Target(mlflow, f"{mlflow_url}/invocations", bodies["mlflow"]),
        }
        print(f"model-api serve, mlflow models serve and the ceiling, taking turns in {ROUNDS} rounds ...")
        # the ceiling (a bare FastAPI endpoint) only on the scenario it is compared in
        with_ceiling = {**targets, "ceiling": Target(ceiling, f"{ceiling_url}/predict", bodies["ceiling"])}
        # 64 rows: model-api is sent mlflow's own request, and /predict with records beside it
        same_request = {
            "model-api": Target(ours, f"{ours_url}/invocations", bodies["mlflow"]),
            "mlflow": targets["mlflow"],
            PREDICT: targets["model-api"],
        }
        for case in SCENARIOS:
            each = with_ceiling if case == SCENARIOS[2] else same_request if case[1] > 1 else targets
            results += measure(each, case, args.seconds)

    report(results, limit, args.out, served_by)
    print("watch: inference logs to a file at 100% and the shadow on, against both off ...", flush=True)
    # interleaved rounds, as above: one run of each, one after the other, is this machine's noise
    watchbench.run(ROOT, base_env, args.out, max(1, round(args.seconds / ROUNDS)), ROUNDS, None)
    return 0


def ratio(a: float, b: float) -> float | None:
    """`a / b`, or None when `b` is 0 (a server that answered nothing in a scenario: wrk reports
    0 req/s and 0 ms)."""
    return a / b if b else None


def over(a: float, b: float, spec: str) -> str:
    """`ratio(a, b)` formatted by `spec` ("{:.1f}x"), or "n/a" where it is None."""
    r = ratio(a, b)
    return "n/a" if r is None else spec.format(r)


def report(results: list[Result], limit: dict[str, float], out: Path, served_by: str) -> None:
    """Print the run's tables and write them to `out`/bench.md; `out`/bench.json first, so that
    the figures are kept whatever the report makes of them."""
    by = {(r.server, r.scenario): r for r in results}
    ceiling = by[("ceiling", SCENARIOS[2][0])]
    (out / "bench.json").write_text(
        json.dumps(
            {
                "results": [asdict(r) for r in results],
                "in_process": limit,
                "ceiling_req_s": ceiling.req_s,
                "served_by": served_by,
                "requests": REQUESTS,
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "each server one worker on core 0, wrk on core 1.",
        "",
        f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        f"model-api served by {served_by}.",
        "",
        *(f"Sent in the {where}: {what}." for where, what in REQUESTS.items()),
        "",
        "| in process | 1 row ms | 64 rows ms |",
        "|---|---:|---:|",
    ]
    for label, key in (("model predict (DataFrame)", "predict"), ("fast path (request columns)", "fast")):
        if f"{key}_1_rows_ms" in limit:
            lines.append(f"| {label} | {limit[f'{key}_1_rows_ms']:.2f} | {limit[f'{key}_64_rows_ms']:.2f} |")
    if "fast_64_different_rows_ms" in limit:
        lines.append(f"| fast path, 64 rows none the same | | {limit['fast_64_different_rows_ms']:.2f} |")
    lines += [
        "",
        "| scenario | server | req/s | rows/s | p50 ms | p99 ms | errors | RSS MB | ours/mlflow |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for scenario, _, _ in SCENARIOS:
        ours, theirs = by[("model-api", scenario)], by[("mlflow", scenario)]
        ratio = (
            f"{over(ours.rows_s, theirs.rows_s, '{:.1f}x')} rows/s, "
            f"p50 {over(ours.p50_ms, theirs.p50_ms, '{:.2f}x')}, "
            f"p99 {over(ours.p99_ms, theirs.p99_ms, '{:.2f}x')}, "
            f"RSS {over(ours.rss_mb, theirs.rss_mb, '{:.2f}x')}"
        )
        pairs = [(ours, ratio), (theirs, "")]
        if (PREDICT, scenario) in by:
            records = by[(PREDICT, scenario)]
            why = silence(records) or (f"{records.errors} errors" if records.errors else None)
            note = why or f"{over(records.rows_s, theirs.rows_s, '{:.1f}x')} rows/s (records, no target)"
            pairs.insert(1, (records, note))
        for r, note in pairs:
            lines.append(
                f"| {scenario} | {r.server} | {r.req_s:.0f} | {r.rows_s:.0f} | {r.p50_ms:.1f} | "
                f"{r.p99_ms:.1f} | {r.errors} | {r.rss_mb:.0f} | {note} |"
            )
    ours64 = by[("model-api", SCENARIOS[2][0])]
    shares = ", ".join(
        over(a, b, "{:.0%}") for a, b in zip(ours64.rounds_req_s, ceiling.rounds_req_s, strict=True)
    )
    lines += [
        "",
        f"Ceiling (bare FastAPI endpoint, single row, c=64): {ceiling.req_s:.0f} req/s, p99 "
        f"{ceiling.p99_ms:.1f} ms; model-api reaches {over(ours64.req_s, ceiling.req_s, '{:.0%}')} of it "
        f"(round by round: {shares}).",
    ]
    lines += ["", *speed_targets(by)]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "bench.md").write_text(text + "\n")


def speed_targets(by: dict[tuple[str, str], Result]) -> list[str]:
    """The compiled fast path's speed targets (issue 13), each PASS or FAIL on this run's figures,
    as a Markdown table. A target whose model-api scenario answered nothing, in any round, or had
    errors (wrk counts non-2xx answers in its req/s) fails. Otherwise, one whose yardstick (mlflow,
    the ceiling) answered nothing or had errors in its scenario is n/a: its figures are no
    yardstick. The p99 target is for a quiet machine: the rounds' p99 show whether one was."""
    one, c64 = by[("model-api", SCENARIOS[0][0])], by[("model-api", SCENARIOS[2][0])]
    their_one, their_c64 = by[("mlflow", SCENARIOS[0][0])], by[("mlflow", SCENARIOS[2][0])]
    ceiling = by[("ceiling", SCENARIOS[2][0])]
    # (target, the model-api figures it is judged on, its yardsticks, met, what was measured)
    rows: list[tuple[str, Result, tuple[Result, ...], bool, str]] = [
        (
            "single row, c=1: p50 at most 1/10 of mlflow's",
            one,
            (their_one,),
            one.p50_ms <= 0.1 * their_one.p50_ms,
            f"{one.p50_ms:.1f} ms, {over(one.p50_ms, their_one.p50_ms, '{:.2f}x')}",
        ),
        (
            "single row, c=64: at least 40x mlflow's req/s",
            c64,
            (their_c64,),
            c64.req_s >= 40 * their_c64.req_s,
            over(c64.req_s, their_c64.req_s, "{:.1f}x"),
        ),
        (
            "single row, c=64: at least half the ceiling",
            c64,
            (ceiling,),
            c64.req_s >= ceiling.req_s / 2,
            over(c64.req_s, ceiling.req_s, "{:.0%}"),
        ),
        (
            "single row, c=64: p99 at most 30 ms",
            c64,
            (),
            c64.p99_ms <= 30,
            f"{c64.p99_ms:.1f} ms (rounds: {', '.join(f'{p:.1f}' for p in c64.rounds_p99_ms)})",
        ),
    ]
    for name, _, _ in SCENARIOS[3:]:
        ours, theirs = by[("model-api", name)], by[("mlflow", name)]
        rows.append(
            (
                f"{name}, the same request: at least 30x mlflow's rows/s",
                ours,
                (theirs,),
                ours.rows_s >= 30 * theirs.rows_s,
                over(ours.rows_s, theirs.rows_s, "{:.1f}x"),
            )
        )
    return ["| target | result | measured |", "|---|---|---|"] + [
        f"| {name} | {verdict(r, yardsticks, ok)} | {measured}{f', {r.errors} errors' if r.errors else ''} |"
        for name, r, yardsticks, ok, measured in rows
    ]


def silence(r: Result) -> str | None:
    """Why `r`'s figures are no measurement, or None. wrk reports a server that answered nothing as
    0 req/s and 0 ms with no errors (it counts a timeout only when a late answer comes); in a round
    shorter than its timeout, a server that hung gives such a round, whose zeros would pull the
    medians down and the mean req/s with them."""
    if r.req_s <= 0 or r.p50_ms <= 0:
        return "answered nothing"
    if any(x <= 0 for x in r.rounds_req_s):
        return "answered nothing in a round"
    return None


def verdict(ours: Result, yardsticks: tuple[Result, ...], met: bool) -> str:
    """PASS, FAIL, or n/a with why (see speed_targets). model-api's own failure comes first: one
    that answered nothing (in a round or in all) or had errors fails whatever its yardsticks say
    (0 ms would otherwise meet a latency target); then a yardstick that answered nothing or had
    errors judges nothing."""
    if why := silence(ours):
        return f"FAIL ({ours.server} {why})"
    if ours.errors:
        return "FAIL"
    for y in yardsticks:
        if why := silence(y):
            return f"n/a ({y.server} {why})"
        if y.errors:
            return f"n/a ({y.server} had {y.errors} errors)"
    return "PASS" if met else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
