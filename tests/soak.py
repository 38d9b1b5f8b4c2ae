"""Soak: a real `model-api serve` under locust; no failed request, and memory that does not grow.

    python -m tests.soak --duration 60s --users 100     # what `make soak` runs

It registers the demo model (100 trees, as `make serve` does) in a temporary registry, starts the
server on a free loopback port, runs the project's locustfile headless against it, and samples the
resident memory of the server's process tree every second. Memory "does not grow" when the mean of
the last third of the run is within the allowance of the mean of the first third (the first
seconds, while users spawn and the allocator settles, are left out). It prints the numbers, writes
them to loadtest-results/soak.json, and exits non-zero on any failure or growth.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.support import ROOT, free_port, locust_command, make_registry, running_service, service_env

WARM_UP_S = 10.0
"""Left out of the memory comparison: users spawn, caches and the allocator's arenas fill."""


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its children (the workers), in bytes."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


class Sampler(threading.Thread):
    """Samples a process tree's RSS every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.wait(self.interval):
            try:
                self.samples.append((time.monotonic() - start, tree_rss(self.pid)))
            except psutil.Error:
                return


def memory_verdict(samples: list[tuple[float, int]], allowance: float) -> dict[str, Any]:
    """Compare the mean RSS of the first and last thirds of the samples taken after the warm-up."""
    steady = [rss for t, rss in samples if t >= WARM_UP_S]
    if len(steady) < 9:
        return {"ok": False, "reason": f"only {len(steady)} samples after the warm-up"}
    third = len(steady) // 3
    first = statistics.fmean(steady[:third])
    last = statistics.fmean(steady[-third:])
    growth = (last - first) / first
    return {
        "ok": growth <= allowance,
        "samples": len(steady),
        "first_third_mib": round(first / 2**20, 1),
        "last_third_mib": round(last / 2**20, 1),
        "peak_mib": round(max(steady) / 2**20, 1),
        "growth_percent": round(100 * growth, 2),
        "allowance_percent": round(100 * allowance, 2),
    }


def locust_totals(csv_prefix: Path) -> dict[str, Any]:
    with Path(f"{csv_prefix}_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    total = rows["Aggregated"]
    return {
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "requests_per_s": round(float(total["Requests/s"]), 1),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
    }


def seconds(text: str) -> float:
    """A duration as locust writes it (60s, 2m, 1h30m) or plain seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    total, number = 0.0, ""
    for char in text.strip():
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total, number = total + float(number) * units[char], ""
        else:
            raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 60s, 2m, 1h30m)")
    return total + float(number or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=seconds, default=60.0, help="60s, 2m, ... (default 60s)")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="MODEL_API_WORKERS of the server")
    parser.add_argument("--allowance", type=float, default=0.05, help="memory growth allowed (0.05 = 5%%)")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtest-results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        root = Path(tmp)
        print("registering the demo model (100 trees) in a temporary registry", flush=True)
        registry = make_registry(root, n_trees=100)
        extra = {"MODEL_API_WORKERS": str(args.workers), "MODEL_API_LOG_LEVEL": "warning"}
        if args.workers > 1:
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(root / "metrics")
        env = service_env(registry.tracking_uri, free_port(), **extra)
        with running_service(env, root / "server.log") as server:
            sampler = Sampler(server.process.pid)
            sampler.start()
            print(f"{args.users} users for {args.duration:g}s against {server.url}", flush=True)
            try:
                locust = subprocess.run(
                    [
                        *locust_command(
                            server.url,
                            users=args.users,
                            spawn_rate=args.spawn_rate,
                            run_time_s=int(args.duration),
                            csv_prefix=args.out / "soak",
                        ),
                        "--only-summary",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=args.duration + 120,
                    check=False,
                )
            finally:
                sampler.done.set()
                sampler.join(10)
            alive = server.process.poll() is None
            log = server.log()

    totals = locust_totals(args.out / "soak")
    memory = memory_verdict(sampler.samples, args.allowance)
    report = {
        "duration_s": args.duration,
        "users": args.users,
        "workers": args.workers,
        **totals,
        "memory": memory,
        "server_alive": alive,
        "server_errors": sum(1 for line in log.splitlines() if "ERROR" in line),
        "rss_mib": [(round(t, 1), round(rss / 2**20, 1)) for t, rss in sampler.samples],
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    ok = locust.returncode == 0 and totals["failures"] == 0 and memory["ok"] and alive
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mib"}, indent=2))
    if locust.returncode != 0:
        print(locust.stderr[-3000:], file=sys.stderr)
    print("soak: PASS" if ok else "soak: FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
