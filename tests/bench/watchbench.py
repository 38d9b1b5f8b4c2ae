"""What watching the model costs: single row, c=64, with inference logs and the shadow off and on.

Three servers, each one worker on core 0 with wrk on core 1 (as bench.py): `before` (the source of
a git ref without the watch, when --baseline names one), `off` (this source, inference log and
shadow off: the prediction and feature metrics only) and `on` (inference log to a file at a 100%
sample, the shadow challenger, here the champion itself, at a 100% sample). Rounds are interleaved
so a change of the shared machine's load hits every configuration alike; the median of the rounds
is reported with the spread, and the load average before and after. Targets: `on` within 15% of
`off`; `off` within the spread of `before`.

    python -m tests.bench.bench --watch [--baseline main] [--rounds 3] [--seconds 15]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx

SCENARIO = ("single row, c=64", 1, 64)


def source_of(ref: str, root: Path, into: Path) -> Path:
    """The src/ folder of git `ref`, extracted under `into`."""
    data = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "src"], capture_output=True, check=True, timeout=60
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as archive:
        archive.extractall(into, filter="data")
    return into / "src"


def configurations(
    root: Path, base_env: dict[str, str], out: Path, baseline: str | None
) -> dict[str, dict[str, str]]:
    here = {**base_env, "PYTHONPATH": str(root / "src")}
    configs: dict[str, dict[str, str]] = {}
    if baseline:
        before = source_of(baseline, root, Path(tempfile.mkdtemp(prefix="bench-before-")))
        configs["before"] = {**base_env, "PYTHONPATH": str(before)}
    configs["off"] = here
    configs["on"] = {
        **here,
        "MODEL_API_INFERENCE_LOG": "file",
        "MODEL_API_INFERENCE_LOG_PATH": str(out / "inference-log.jsonl"),
        "MODEL_API_INFERENCE_LOG_SAMPLE_RATE": "1",
        "MODEL_API_INFERENCE_LOG_MAX_BYTES": str(50 * 2**20),
        "MODEL_API_INFERENCE_LOG_BACKUPS": "1",
        "MODEL_API_SHADOW_URI": "models:/ChurnPredictor@champion",
        "MODEL_API_SHADOW_SAMPLE_RATE": "1",
    }
    return configs


def counters(url: str) -> dict[str, float]:
    """The inference log's and the shadow's counters, summed by outcome."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("inference_log_records_total", "shadow_requests_total"):
                key = f"{s.name.removesuffix('_total')}.{s.labels['outcome']}"
                out[key] = out.get(key, 0.0) + s.value
    return out


def run(
    root: Path, base_env: dict[str, str], out: Path, seconds: int, rounds: int, baseline: str | None
) -> dict[str, Any]:
    from tests.bench.bench import free_port, over, ratio, server, wrk

    configs = configurations(root, base_env, out, baseline)
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    body: Path | None = None
    names = list(configs)
    for round_ in range(rounds):
        # Each round in another order, so a trend in the machine's load favours no configuration.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            env = configs[name]
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {**env, "MODEL_API_PORT": str(port), "MODEL_API_HOST": "127.0.0.1"}
            cmd = [str(Path(sys.executable).parent / "model-api"), "serve"]
            with server(cmd, env, f"{url}/ready", out / f"watch-{name}.log") as _proc:
                if body is None:
                    example = httpx.get(f"{url}/model/info", timeout=5).json()["input_example"]
                    body = out / "body-watch-1.json"
                    body.write_text(json.dumps({"instances": example[:1]}))
                wrk(f"{url}/predict", [body], SCENARIO[2], 3)  # warm-up
                stats = wrk(f"{url}/predict", [body], SCENARIO[2], seconds)
                stats |= counters(url)
            runs[name].append(stats)
            print(
                f"  round {round_ + 1} {name:>6}: {stats['req_s']:>7.0f} req/s  "
                f"p50 {stats['p50_ms']:.1f} ms  p99 {stats['p99_ms']:.1f} ms  errors {int(stats['errors'])}",
                flush=True,
            )
    load_after = os.getloadavg()
    summary = {
        name: {
            "req_s": statistics.median(r["req_s"] for r in rs),
            "req_s_min": min(r["req_s"] for r in rs),
            "req_s_max": max(r["req_s"] for r in rs),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "counters": {k: v for k, v in rs[-1].items() if "." in k},
        }
        for name, rs in runs.items()
    }
    report = {
        "scenario": SCENARIO[0],
        "seconds": seconds,
        "rounds": rounds,
        "baseline": baseline,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "summary": summary,
        "runs": runs,
        "on_vs_off": ratio(summary["on"]["req_s"], summary["off"]["req_s"]),
    }
    if "before" in summary:
        report["off_vs_before"] = ratio(summary["off"]["req_s"], summary["before"]["req_s"])
    (out / "watch.json").write_text(json.dumps(report, indent=2))  # the figures, whatever follows
    lines = [
        f"Watch cost, {SCENARIO[0]}, {rounds} interleaved rounds of {seconds} s; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (2 cores, shared).",
        "",
        "| configuration | req/s (median) | min..max | p50 ms | p99 ms | errors | counters (last round) |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for name, s in summary.items():
        shown = ", ".join(f"{k} {v:.0f}" for k, v in sorted(s["counters"].items()))
        lines.append(
            f"| {name} | {s['req_s']:.0f} | {s['req_s_min']:.0f}..{s['req_s_max']:.0f} | {s['p50_ms']:.1f} | "
            f"{s['p99_ms']:.1f} | {int(s['errors'])} | {shown} |"
        )
    on, off = summary["on"]["req_s"], summary["off"]["req_s"]
    lines += ["", f"on / off: {over(on, off, '{:.1%}')} (target: at least 85%)"]
    if "off_vs_before" in report:
        before = summary["before"]["req_s"]
        lines.append(f"off / before: {over(off, before, '{:.1%}')} (target: within the rounds' spread)")
    text = "\n".join(lines)
    print("\n" + text)
    (out / "watch.md").write_text(text + "\n")
    return report
