"""`python -m tests.bench.fastpath`: the demo model's own predict_proba against its compiled fast path.

Trains the demo pipeline (scaler + one-hot encoder + 100-tree forest, `model_api.demo`), builds the
fast path (timing the build, which includes the 200k-row exactness check), then prints the p50 of
`pipeline.predict_proba(DataFrame)` and of `fast.predict(columns)` for 1 and 64 rows, side by side.
The model's side includes the DataFrame built from the request's columns, as the server builds it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from model_api import demo
from model_api.fastpath import ColumnSpec, FastPath, build_fast_path
from tests.unit.fastpath_support import converter


def p50_ms(call: Callable[[], object], repeat: int) -> float:
    for _ in range(min(20, repeat)):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--verify-rows", type=int, default=200_000)
    args = parser.parse_args()

    frame, label = demo.make_churn_table(4000)
    model = demo.build_pipeline(args.trees).fit(frame, label)
    specs = [
        ColumnSpec(c, "long" if frame[c].dtype.kind == "i" else "double" if c in demo.NUMERIC else "string")
        for c in frame.columns
    ]
    to_frame = converter(specs)
    start = time.perf_counter()
    fast, reason = build_fast_path(model, specs, to_frame, n_random=args.verify_rows)
    took = time.perf_counter() - start
    print(f"build + verification: {took:.1f} s; {reason}")
    if not isinstance(fast, FastPath):
        return 1

    print(f"{'rows':>5} | {'model.predict_proba p50':>24} | {'fast path p50':>14} | speed-up")
    print(f"{'-' * 5} | {'-' * 24} | {'-' * 14} | {'-' * 8}")
    for n in (1, 64):
        rows = frame.sample(n, random_state=n)
        columns = {c: rows[c].tolist() for c in frame.columns}
        model_ms = p50_ms(lambda c=columns: model.predict_proba(to_frame(c)), args.repeat)
        fast_ms = p50_ms(lambda c=columns, n=n: fast.predict(c, n, True), args.repeat)
        print(f"{n:>5} | {model_ms:>21.3f} ms | {fast_ms:>11.3f} ms | {model_ms / fast_ms:>7.0f}x")
    evaluators(model, frame, args.repeat)
    return 0


def evaluators(model: Any, frame: pd.DataFrame, repeat: int) -> None:
    """The forest alone on preprocessed rows: each candidate evaluator (all verified exact)."""
    from model_api.fastpath.trees import forest_candidates

    print(f"\n{'tree evaluator':<26} | {'1 row p50':>10} | {'64 rows p50':>11}")
    print(f"{'-' * 26} | {'-' * 10} | {'-' * 11}")
    X = np.asarray(model[:-1].transform(frame), dtype=np.float64)
    for make in forest_candidates(model[-1]):
        ev = make()
        times = [p50_ms(lambda n=n, ev=ev: ev.run(X[:n], True), repeat) for n in (1, 64)]
        print(f"{ev.name:<26} | {times[0]:>7.3f} ms | {times[1]:>8.3f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
