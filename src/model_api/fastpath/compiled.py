"""StackedTrees' walk compiled to machine code by numba: the same arithmetic, 2.7-50x faster.

Why our own loop rather than a library's: measured on the demo forest (100 trees, depth 12,
70k nodes) with rows of its own training table, one core, numba 0.68, per batch of 1 / 8 / 64 /
512 rows:

| evaluator                                   | 1 row    | 8 rows   | 64 rows  | 512 rows |
|---------------------------------------------|----------|----------|----------|----------|
| scikit-learn `Tree.apply`, tree by tree     | 0.20 ms  | 0.23 ms  | 1.03 ms  | 5.2 ms   |
| treelite GTIL (not exact for every model)   | 0.04 ms  |          | 1.4 ms   |          |
| numpy stacked trees (`stacked.py`)          |          |          | 1.3 ms   |          |
| compiled, a row at a time (`by_rows=True`)  | 0.004 ms | 0.040 ms | 0.71 ms  | 4.9 ms   |
| compiled, by levels                         | 0.012 ms | 0.026 ms | 0.26 ms  | 1.9 ms   |

Each node is one 16-byte record holding its threshold, feature and left child, the right child
being the next record (nodes renumbered breadth first at load): measured side by side with the
previous layout (four uint32 a node, the threshold in an array apart), 64 rows 282 -> 215 us,
1,024 rows 4.3 -> 3.1 ms, the same bits (the table above was measured before, on that layout).

The walk by levels moves eight rows down a tree together, their node indices in registers
(`LANES`), rather than a block's node indices through an array: a step no longer stores and
reloads its row's node, and the eight steps overlap. Measured side by side in one process on rows
of the demo's training table, old/new: 24 rows 314 -> 240 us, 64 rows 1,182 -> 841 us, 512 rows
4.7 -> 3.6 ms on a slow spell of the machine, 64 rows 399 -> 290 us and 512 rows 2.9 -> 2.2 ms on
a fast one (23-29% less); one worker serving 64 different rows a request at concurrency 8,
alternating runs, 490-501 -> 534-637 req/s. The same bits.

`Tree.apply` pays ~3 us of Python per tree; its walk, like GTIL's, branches on every split, and a
split's direction is as good as random to the processor, so each step waits out a mispredicted
branch (~6-9 ns). The walk by levels moves a group of eight rows one level down a tree per
step, choosing each child by arithmetic rather than a branch (leaves point to themselves): the
eight rows' steps are independent and overlap (~3 ns a step). For one row there is nothing to
overlap and the branching walk, which runs ahead on its predictions, is faster; the builder times
both at load and uses each where it is faster (`build.by_batch_size`). numba is a maintained
compiler: the loops below are ours, their code generation is not.

A batch without NaN takes a walk by levels without the NaN test (`x != x` is then always false): a
step reads its record's threshold, feature and left child and nothing else, in 12 instructions
rather than 22 (the NaN direction, in a byte array apart, is read only by the other walks), and X
goes in as float64 (float32 on the 8-byte records below), converted once a batch (exactly) rather
than at every step. Measured side by side in one process on the demo forest, on a slow spell of the
machine: the walk alone, 64 rows 253-257 -> 148-150 us, 512 rows 1.81-1.87 -> 1.02-1.05 ms; the
served fast path with its preprocessing (`FastPath.evaluate`), 64 rows 0.41-0.44 -> 0.21 ms, 512
rows 2.3 -> 1.1 ms. One worker serving 64 different rows a request at concurrency 8, alternating
runs: 936-1,167 -> 1,140-1,413 req/s, its model thread 314-383 -> 234-283 us a request. The same
bits. A batch holding a NaN takes the walk with the test, as fast as before.

Trees whose trainer reads float32-rounded inputs (scikit-learn's forests and gradient boosting)
take 8-byte records when they fit (a feature index and a left child at most 65,535 nodes after its
parent, as uint16): the threshold is the largest float32 at most the model's float64 one, so that a
float32 x is at most one exactly when it is at most the other, and X is walked as float32. Half the
memory a node: measured side by side in one process on the demo forest (70k nodes, 1.1 MB of
16-byte records), the walk for 64 different rows 100-124 -> 90-104 us, for 512 rows 691-758 ->
631-669 us; one worker serving 64 different rows a request at concurrency 8, alternating runs, its
model thread 176-227 -> 119-200 us of CPU a request. The same bits. Every walk's left child is
stored as how far after its node it is, in either layout (no cost measured on 16-byte records).

Every walk is `StackedTrees.sum` exactly: the split test `x <= threshold` with the input as float64
(float32 inputs converted exactly, as numba's and C's comparison of mixed floats would; on 8-byte
records, the same answer in float32), a NaN goes where `missing_left` says, and each row's leaf
values are added to `start` one tree after another in tree order (`out[i] += value[leaf]`, never
reordered or fused: numba compiles without fastmath). The load's exactness check runs on each walk
alone, and on the rows that reach the trees without NaN again on their own, for the walk without
the test (`build._check_without_nan`).

The walk by levels takes as many steps per tree as its deepest leaf, for every row: on a very
unbalanced tree it does more work than the walk by rows (a chain 1,018 deep: 2x slower, found by a
review); the load's timing covers batches up to 128 rows only.

numba is imported and the loops compiled on first use (1-3 s, once per process, at model load),
not at import. The loops release the GIL: a model thread and the event loop run at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from model_api.fastpath.stacked import Tree, breadth_first

A = np.ndarray

# Rows that take the trees one after another in the walk by levels: a tree's nodes stay in the
# first-level cache for all of them.
BLOCK = 256
# Rows that walk one tree together, their nodes in registers.
LANES = 8


def _kernels(narrow: bool = False) -> Kernels:
    """(by_levels, by_levels_without_nan, by_rows) for one record layout (`narrow`: 8-byte records
    and float32 X, else 16-byte records and float64 X), compiled once per process and layout.
    Raises ImportError without numba or with its JIT disabled (NUMBA_DISABLE_JIT: the loops would
    run as Python, minutes per load), and RuntimeError when numba cannot compile them (remembered:
    not tried again at the next load)."""
    compiled = _compile(narrow)
    if isinstance(compiled, ImportError):
        raise ImportError(str(compiled)) from compiled
    if isinstance(compiled, Exception):
        raise RuntimeError(f"numba could not compile the tree walk ({type(compiled).__name__})") from compiled
    return compiled


Kernel = Callable[..., None]
Kernels = tuple[Kernel, Kernel, Kernel]


@functools.cache
def _compile(narrow: bool = False) -> Kernels | Exception:
    """(by_levels, by_levels_without_nan, by_rows) compiled by numba for one record layout, or why
    not.

    Each takes (X, split, links, missing, value, roots, depths, out) and adds each row's leaf values
    to `out`, tree after tree. `split` and `links` are two views of one buffer of node records
    (`_pack`): a step reads one record, in one cache line. Wide records (16 bytes: float64
    threshold, uint32 feature and left child) walk float64 X; narrow ones (8 bytes: float32
    threshold, uint16 feature and left child) float32 X. On the demo forest, 64 rows: 282 -> 215
    us for 16-byte records against four uint32 a node with the threshold apart, which took 1.5x
    less than separate arrays of intp. Unsigned indices also spare numba its negative-index check
    (-25%)."""
    try:
        from numba import config, njit, types
    except ImportError as exc:
        return exc
    if getattr(config, "DISABLE_JIT", False):
        return ImportError("numba's JIT is disabled (NUMBA_DISABLE_JIT)")

    real = types.float32 if narrow else types.float64
    x2, s1 = types.Array(real, 2, "C"), types.Array(real, 1, "C")
    l1 = types.Array(types.uint16 if narrow else types.uint32, 1, "C")
    f2, p1 = types.Array(types.float64, 2, "C"), types.Array(types.uintp, 1, "C")
    b1 = types.Array(types.uint8, 1, "C")
    # Compiled here, so that a failure shows at load (as RuntimeError).
    signature = types.void(x2, s1, l1, b1, f2, p1, p1, f2)

    try:
        return _define(njit([signature], nogil=True, cache=False), njit(inline="always", cache=False))
    except Exception as exc:  # a numba that compiles these loops otherwise: the next evaluator serves
        return exc


def _define(
    jit: Callable[[Kernel], Kernel], step_jit: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> Kernels:
    """The three loops, compiled by `jit` as they are defined (`step_jit` compiles the walk by levels'
    steps, inlined into it). Node `at`'s record is read through two views of one buffer (`_pack`):
    `split[2 * at]` its threshold, `links[4 * at + 2]` its feature, `links[4 * at + 3]` how far
    after it its left child is; the right child is the next node. `missing[at]` is 1 when a NaN
    goes left. A leaf's threshold is +inf, its NaN goes left and its left child is itself (0 after
    it)."""

    @step_jit
    def step(X: A, row: int, at: np.uint32, split: A, links: A, missing: A) -> np.uint32:
        """Node `at`'s child on row `row`'s way: its left child, or the next node (the right)."""
        x = X[row, links[np.uint32(4) * at + np.uint32(2)]]
        go_left = (x <= split[np.uint32(2) * at]) | ((x != x) & (missing[at] != np.uint8(0)))
        return np.uint32(at + links[np.uint32(4) * at + np.uint32(3)] + np.uint32(1) - np.uint32(go_left))

    @step_jit
    def step_without_nan(X: A, row: int, at: np.uint32, split: A, links: A, missing: A) -> np.uint32:
        """`step` for an X without NaN, where `x != x` is always false: the same child."""
        go_left = X[row, links[np.uint32(4) * at + np.uint32(2)]] <= split[np.uint32(2) * at]
        return np.uint32(at + links[np.uint32(4) * at + np.uint32(3)] + np.uint32(1) - np.uint32(go_left))

    def levels(step: Callable[..., np.uint32]) -> Kernel:
        @jit
        def by_levels(X: A, split: A, links: A, missing: A, value: A, roots: A, depths: A, out: A) -> None:
            # Eight rows walk a tree together, their nodes in registers (a0..a7): their steps are
            # independent, so the processor overlaps them. The rows of a block take tree after
            # tree, so each tree's nodes stay in the first-level cache for all of them.
            n, width = X.shape[0], value.shape[1]
            for first in range(0, n, BLOCK):
                stop = min(n, first + BLOCK)
                for t in range(roots.shape[0]):
                    root, depth = np.uint32(roots[t]), depths[t]
                    i = first
                    while i + LANES <= stop:
                        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = root
                        for _ in range(depth):
                            a0 = step(X, i, a0, split, links, missing)
                            a1 = step(X, i + 1, a1, split, links, missing)
                            a2 = step(X, i + 2, a2, split, links, missing)
                            a3 = step(X, i + 3, a3, split, links, missing)
                            a4 = step(X, i + 4, a4, split, links, missing)
                            a5 = step(X, i + 5, a5, split, links, missing)
                            a6 = step(X, i + 6, a6, split, links, missing)
                            a7 = step(X, i + 7, a7, split, links, missing)
                        for k in range(width):
                            out[i, k] += value[a0, k]
                            out[i + 1, k] += value[a1, k]
                            out[i + 2, k] += value[a2, k]
                            out[i + 3, k] += value[a3, k]
                            out[i + 4, k] += value[a4, k]
                            out[i + 5, k] += value[a5, k]
                            out[i + 6, k] += value[a6, k]
                            out[i + 7, k] += value[a7, k]
                        i += LANES
                    while i < stop:  # the last rows of the block, fewer than LANES, one at a time
                        at = root
                        for _ in range(depth):
                            at = step(X, i, at, split, links, missing)
                        for k in range(width):
                            out[i, k] += value[at, k]
                        i += 1

        return by_levels

    @jit
    def by_rows(X: A, split: A, links: A, missing: A, value: A, roots: A, depths: A, out: A) -> None:
        n, width = X.shape[0], value.shape[1]
        for t in range(roots.shape[0]):
            for i in range(n):
                at = np.uint32(roots[t])
                after = links[np.uint32(4) * at + np.uint32(3)]
                while after != 0:
                    x = X[i, links[np.uint32(4) * at + np.uint32(2)]]
                    if x <= split[np.uint32(2) * at] or (x != x and missing[at] != np.uint8(0)):
                        at = np.uint32(at + after)
                    else:
                        at = np.uint32(at + after + np.uint32(1))
                    after = links[np.uint32(4) * at + np.uint32(3)]
                for k in range(width):
                    out[i, k] += value[at, k]

    return levels(step), levels(step_without_nan), by_rows


def _round_down(threshold: np.ndarray) -> np.ndarray:
    """Each float64 threshold as the largest float32 at most it: for a float32 x, `x <= t` exactly
    when `x <= _round_down(t)` (x is a float32 at most t, and the result is the largest such). NaN
    stays NaN, +inf +inf."""
    with np.errstate(over="ignore"):  # beyond float32's range: +-inf, then one step down from +inf
        narrow = threshold.astype(np.float32)
        above = narrow.astype(np.float64) > threshold
        narrow[above] = np.nextafter(narrow[above], np.float32(-np.inf))
    return narrow


NARROW_MOST = 2**16 - 1
"""The largest feature index and left-child offset an 8-byte record holds (uint16 each)."""


def _pack(
    trees: Sequence[Tree], narrow: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """The trees' nodes as records, breadth first, tree after tree (`_define` says what a record
    holds): (records, where a NaN goes [n_nodes] uint8 (1: left), leaf values [n_nodes, width]
    float64, roots, depths, features read, narrow). With `narrow`, 8-byte records with float32
    thresholds rounded down (`_round_down`: exact for float32 X only) when every feature index and
    left-child offset fits in 16 bits, else 16-byte records with float64 thresholds.
    Raises RuntimeError when the node indices or a feature's would not fit the records, ValueError
    for no trees."""
    thresholds, features, after, missing, values, roots, depths = [], [], [], [], [], [], []
    base = width = 0
    for tree in trees:
        left = np.asarray(tree.left, dtype=np.intp)
        try:
            order, depth = breadth_first(left, np.asarray(tree.right, dtype=np.intp))
        except ValueError as exc:  # a cycle: refused as the other trees the records cannot hold
            raise RuntimeError(str(exc)) from exc
        new = np.empty(len(left), dtype=np.intp)
        new[order] = np.arange(len(order))
        old_left = left[order]
        leaf = old_left < 0
        feature = np.where(leaf, 0, np.asarray(tree.feature)[order]).astype(np.int64)
        width = max(width, int(feature.max()) + 1)
        if width > 2**32:
            raise RuntimeError("a feature index beyond what the compiled walk records")
        child = np.where(leaf, new[order], new[np.where(leaf, 0, old_left)])
        old_right = np.asarray(tree.right, dtype=np.intp)[order]
        if (new[old_right[~leaf]] != child[~leaf] + 1).any():  # by construction; checked
            raise RuntimeError("a tree whose nodes are not a tree (a node reached twice)")
        thresholds.append(np.where(leaf, np.inf, np.asarray(tree.threshold, dtype=np.float64)[order]))
        features.append(feature)
        after.append(child - np.arange(len(order)))  # >= 0: breadth first, a child comes after
        missing.append((leaf | np.asarray(tree.missing_left, dtype=bool)[order]).astype(np.uint8))
        values.append(np.asarray(tree.value, dtype=np.float64)[order])
        roots.append(base)
        depths.append(depth)
        base += len(order)
        if 4 * base + 4 >= 2**32:  # a record's links start at 4 * node, in uint32
            raise RuntimeError("more tree nodes than the compiled walk indexes")
    offsets = np.concatenate(after)
    narrow = narrow and width - 1 <= NARROW_MOST and int(offsets.max()) <= NARROW_MOST
    real, index = ("f4", "u2") if narrow else ("f8", "u4")
    record = np.empty(base, dtype=[("threshold", real), ("feature", index), ("left", index)])
    threshold = np.concatenate(thresholds)
    record["threshold"] = _round_down(threshold) if narrow else threshold
    record["feature"] = np.concatenate(features)
    record["left"] = offsets
    return (
        record.view(np.float32 if narrow else np.float64),
        np.concatenate(missing),
        np.ascontiguousarray(np.concatenate(values)),
        np.array(roots, dtype=np.uintp),
        np.array(depths, dtype=np.uintp),
        width,
        narrow,
    )


class CompiledTrees:
    """Trees walked by a compiled loop (see the module docstring): `sum(X, start)` is
    `StackedTrees(trees).sum(X, start)` bit for bit.

    With `float32`, for trees whose trainer reads float32-rounded inputs, X must be float32, and
    the records are 8 bytes when they can be (`_pack`); otherwise X is float32 or float64, and the
    records 16 bytes. X: [n_rows, n_features], any layout. start: [width] float64. Returns [n_rows,
    width] float64. Raises ImportError when numba is missing or its JIT is disabled, RuntimeError
    when it cannot compile the loops or the nodes are not trees (a node reached twice, a cycle) or
    too many to index, ValueError for an X that is not 2-D or has fewer columns than the splits
    read, TypeError for another dtype. Holds 9 or 17 bytes a node for its record and NaN direction,
    and 8 a value of its leaf values (the two walks of a model hold their own copies)."""

    def __init__(self, trees: Sequence[Tree], *, by_rows: bool = False, float32: bool = False) -> None:
        self._split, self._missing, self._value, self._roots, self._depths, self._width, narrow = _pack(
            trees, float32
        )
        by_levels, without_nan, rows = _kernels(narrow)
        self._kernel = rows if by_rows else by_levels
        self._without_nan = None if by_rows else without_nan
        self.by_rows = by_rows
        self.n_trees = len(trees)
        self.record_bytes = 8 if narrow else 16
        self._links = self._split.view(np.uint16 if narrow else np.uint32)
        self._dtypes: tuple[type[np.floating[Any]], ...] = (
            (np.float32,) if float32 else (np.float32, np.float64)
        )

    @property
    def walks_without_nan(self) -> bool:
        """A matrix without NaN takes the walk by levels without the NaN test."""
        return self._without_nan is not None

    def sum(self, X: np.ndarray, start: np.ndarray) -> np.ndarray:
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D matrix [rows, features], not {X.ndim}-D")
        if X.shape[1] < self._width:  # the loops read X[i, feature] unchecked: refused, not read past
            raise ValueError(f"X has {X.shape[1]} features; the trees read {self._width}")
        if X.dtype not in self._dtypes:
            names = " or ".join(np.dtype(d).name for d in self._dtypes)
            raise TypeError(f"X must be {names}, not {X.dtype}")
        # X in its thresholds' type. 16-byte records: float32 to float64 is exact, and the split
        # test promotes x to float64 anyway. 8-byte records: X is float32 already (`_dtypes`).
        X = np.ascontiguousarray(X, dtype=self._split.dtype)
        kernel = self._kernel
        if self._without_nan is not None and not np.isnan(X).any():
            kernel = self._without_nan
        out = np.empty((X.shape[0], self._value.shape[1]), dtype=np.float64)
        out[:] = start
        kernel(X, self._split, self._links, self._missing, self._value, self._roots, self._depths, out)
        return out
