"""The compiled tree walks (numba): StackedTrees' arithmetic bit for bit, and a fallback without them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from model_api.fastpath import ColumnSpec, build_fast_path, verify
from model_api.fastpath import compiled as compiled_module
from model_api.fastpath.compiled import BLOCK, CompiledTrees
from model_api.fastpath.stacked import StackedTrees, Tree
from model_api.fastpath.trees import _sk_tree, hist_tree
from tests.unit.fastpath_support import NUMERIC, build_demo, converter, table

SERVED_BY_LEVELS = r"(compiled tree walk, row by row up to \d+ rows?, )?compiled tree walk( above)?: "
"""The reason of a fast path whose large batches take the compiled walk by levels."""


def _forest_trees() -> tuple[list[Tree], np.ndarray]:
    """A forest trained on rows with NaN (so some splits send NaN left, some right), and its splits."""
    frame, label, _ = table(nan=True)
    forest = RandomForestClassifier(n_estimators=15, random_state=0).fit(frame[NUMERIC], label)
    trees = [_sk_tree(e.tree_, e.tree_.value[:, 0, :3]) for e in forest.estimators_]
    assert any(t.missing_left[t.left >= 0].any() for t in trees)
    assert any((~t.missing_left[t.left >= 0]).any() for t in trees)
    return trees, np.concatenate([t.threshold[t.left >= 0] for t in trees])


def _hist_trees() -> list[Tree]:
    frame, _, score = table(nan=True)
    model = HistGradientBoostingRegressor(max_iter=15, random_state=0).fit(frame[NUMERIC], score)
    return [hist_tree(predictor.nodes) for (predictor,) in model._predictors]


def _rows(
    n: int, n_features: int, splits: np.ndarray, dtype: Any, seed: int = 0, nan: bool = True
) -> np.ndarray:
    """Random rows with values on split thresholds, one float step either side, and NaN (unless not
    `nan`: then no NaN, and an infinite value, whatever the splits)."""
    rng = np.random.default_rng(seed)
    X = rng.choice(splits, size=(n, n_features)).astype(np.float64)
    step = rng.integers(-1, 2, size=X.shape)
    X = np.where(step < 0, np.nextafter(X, -np.inf), np.where(step > 0, np.nextafter(X, np.inf), X))
    if nan:
        X[rng.random(X.shape) < 0.08] = np.nan
    elif n:
        X[0, 0], X[-1, -1] = np.inf, -np.inf
    with np.errstate(over="ignore"):  # a split at infinity (NaN apart from the rest), one step below
        return X.astype(dtype)


def _wrap_walk_without_nan(
    monkeypatch: pytest.MonkeyPatch, wrap: Callable[[compiled_module.Kernel], compiled_module.Kernel]
) -> None:
    """Every walk built from now on takes `wrap(walk without the NaN test)` in its place, in either
    record layout."""
    kernels = compiled_module._kernels

    def wrapped(narrow: bool = False) -> compiled_module.Kernels:
        by_levels, without_nan, by_rows = kernels(narrow)
        return by_levels, wrap(without_nan), by_rows

    monkeypatch.setattr(compiled_module, "_kernels", wrapped)


def _count_walks_without_nan(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the calls of the walk without the NaN test, in either record layout."""
    calls = {"without NaN": 0}

    def counting(without_nan: compiled_module.Kernel) -> compiled_module.Kernel:
        def counted(*args: Any) -> None:
            calls["without NaN"] += 1
            without_nan(*args)

        return counted

    _wrap_walk_without_nan(monkeypatch, counting)
    return calls


@pytest.mark.parametrize("by_rows", [False, True], ids=["by levels", "by rows"])
@pytest.mark.parametrize("n", [0, 1, 7, 13, BLOCK, 2 * BLOCK + 3])
@pytest.mark.parametrize("nan", [True, False], ids=["with NaN", "without NaN"])
def test_each_walk_is_the_numpy_walk_bit_for_bit(
    by_rows: bool, n: int, nan: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In both record layouts: a forest's on float32 rows placed on, and one step either side of,
    its float64 thresholds (8-byte records round them down to float32; 16-byte ones keep them),
    HistGradientBoosting's on float64 rows. Without NaN, the walk by levels takes its walk without
    the NaN test (counted)."""
    calls = _count_walks_without_nan(monkeypatch)
    trees, splits = _forest_trees()
    X = _rows(n, len(NUMERIC), splits, np.float32, nan=nan)
    start = np.array([0.0, -0.0, 0.25])
    expected = StackedTrees(trees).sum(X, start)
    assert expected.shape == (n, 3)
    for float32, record_bytes in ((True, 8), (False, 16)):
        walk = CompiledTrees(trees, by_rows=by_rows, float32=float32)
        assert walk.record_bytes == record_bytes
        got = walk.sum(X, start)
        assert got.shape == expected.shape
        assert (got.view(np.uint64) == expected.view(np.uint64)).all()
    hist = _hist_trees()
    X64 = _rows(n, len(NUMERIC), np.concatenate([t.threshold for t in hist]), np.float64, seed=1, nan=nan)
    got = CompiledTrees(hist, by_rows=by_rows).sum(X64, np.array([0.1]))
    expected = StackedTrees(hist).sum(X64, np.array([0.1]))
    assert (got.view(np.uint64) == expected.view(np.uint64)).all()
    clean = [not np.isnan(X).any(), not np.isnan(X).any(), not np.isnan(X64).any()]
    assert calls["without NaN"] == (0 if by_rows else sum(clean))
    assert nan or all(clean)


@pytest.mark.parametrize("by_rows", [False, True], ids=["by levels", "by rows"])
def test_a_float64_threshold_between_two_float32_splits_them_as_the_model_does(by_rows: bool) -> None:
    """8-byte records hold a float32 threshold: the largest float32 at most the model's (rounded to
    nearest, 0.1 would become a float32 above 0.1, and send that float32 left where the model sends
    it right). Beyond float32's range, a split still sends every finite float32 one way."""
    tree = Tree(
        feature=np.array([0, 1, 0, 0, 0]),
        threshold=np.array([0.1, 1e300, 0.0, 0.0, 0.0]),
        left=np.array([1, 3, -1, -1, -1]),
        right=np.array([2, 4, -1, -1, -1]),
        missing_left=np.zeros(5, bool),
        value=np.array([[0.0], [0.0], [1.0], [2.0], [3.0]]),
    )
    above = np.float32(0.1)  # rounded to nearest: above 0.1
    assert float(above) > 0.1
    below = np.nextafter(above, np.float32(0))
    big = np.finfo(np.float32).max
    X = np.array([[below, big], [above, big], [below, np.inf], [-np.inf, -big]], dtype=np.float32)
    walk = CompiledTrees([tree], by_rows=by_rows, float32=True)
    assert walk.record_bytes == 8
    got = walk.sum(X, np.zeros(1))
    assert got.ravel().tolist() == [2.0, 1.0, 3.0, 2.0]
    assert (got == StackedTrees([tree]).sum(X, np.zeros(1))).all()


def test_thresholds_round_down_to_the_largest_float32_at_most_them() -> None:
    """Signs, subnormals, float32's largest value and beyond either way (no overflow warning leaks),
    infinities, and random values on all scales."""
    most = float(np.finfo(np.float32).max)
    special = [0.1, -0.1, 0.0, -0.0, 5e-324, -5e-324, 1e-40, most, most * (1 + 2**-26), -most * (1 + 2**-26)]
    rng = np.random.default_rng(0)
    t = np.concatenate(
        [
            special,
            [1e300, -1e300, np.inf, -np.inf],
            rng.normal(size=10_000) * 10.0 ** rng.integers(-40, 39, 10_000),
        ]
    )
    down = compiled_module._round_down(t)
    assert down.dtype == np.float32
    assert (down.astype(np.float64) <= t).all()
    with np.errstate(over="ignore"):  # float32's largest value, one step up
        up = np.nextafter(down, np.float32(np.inf)).astype(np.float64)
    assert (up > t)[down < np.inf].all()
    assert np.isnan(compiled_module._round_down(np.array([np.nan]))).all()
    assert np.signbit(compiled_module._round_down(np.array([-0.0]))).all()


def _full_tree(levels: int, rng: np.random.Generator) -> Tree:
    """A full binary tree `levels` deep on three features, nodes numbered breadth first."""
    n = 2**levels - 1
    inner = np.arange(n) < 2 ** (levels - 1) - 1
    return Tree(
        feature=np.where(inner, rng.integers(0, 3, n), 0),
        threshold=np.where(inner, rng.normal(size=n), 0.0),
        left=np.where(inner, 2 * np.arange(n) + 1, -1),
        right=np.where(inner, 2 * np.arange(n) + 2, -1),
        missing_left=rng.random(n) < 0.5,
        value=rng.normal(size=(n, 1)),
    )


def test_trees_too_large_for_8_byte_records_take_16_byte_ones() -> None:
    """A left child more than 65,535 nodes after its parent does not fit uint16. In a full tree 17
    levels deep, the last node with children has its left child 65,535 nodes after it: that fits.
    Split the first node of its last level too, and that node's left child is 65,536 after it."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    X[::7, 1] = np.nan
    full = _full_tree(17, rng)
    n, first = len(full.left), 2**16 - 1  # `first`: the first node of the last level
    one_more = Tree(
        np.append(full.feature, [0, 0]),
        np.append(full.threshold, [0.0, 0.0]),
        np.append(np.where(np.arange(n) == first, n, full.left), [-1, -1]),
        np.append(np.where(np.arange(n) == first, n + 1, full.right), [-1, -1]),
        np.append(full.missing_left, [False, False]),
        np.append(full.value, [[5.0], [7.0]], axis=0),
    )
    for tree, record_bytes in ((full, 8), (one_more, 16)):
        walk = CompiledTrees([tree], float32=True)
        assert walk.record_bytes == record_bytes
        got = walk.sum(X, np.zeros(1))
        assert (got.view(np.uint64) == StackedTrees([tree]).sum(X, np.zeros(1)).view(np.uint64)).all()
    for feature, record_bytes in ((2**16 - 1, 8), (2**16, 16)):  # a feature index past uint16
        split = Tree(
            np.array([feature, 0, 0]),
            np.array([0.5, 0, 0]),
            np.array([1, -1, -1]),
            np.array([2, -1, -1]),
            np.zeros(3, bool),
            np.array([[0.0], [1.0], [2.0]]),
        )
        wide = np.zeros((2, 2**16 + 1), dtype=np.float32)
        wide[1, feature] = 1.0
        walk = CompiledTrees([split], float32=True)
        assert walk.record_bytes == record_bytes
        assert walk.sum(wide, np.zeros(1)).ravel().tolist() == [1.0, 2.0]


def test_walks_for_float32_inputs_refuse_float64_rows() -> None:
    """Their thresholds are rounded for float32 values: a float64 row could fall between."""
    trees, splits = _forest_trees()
    X = _rows(4, len(NUMERIC), splits, np.float64)
    with pytest.raises(TypeError, match="float32"):
        CompiledTrees(trees, float32=True).sum(X, np.zeros(3))
    CompiledTrees(trees).sum(X, np.zeros(3))


def test_a_moved_threshold_changes_the_answer() -> None:
    """The comparison above can fail: a tree whose splits sit one float32 step higher answers
    differently on rows placed on the splits."""
    trees, splits = _forest_trees()
    X = _rows(2_000, len(NUMERIC), splits, np.float32)
    moved = [
        Tree(
            t.feature,
            np.nextafter(t.threshold.astype(np.float32), np.float32(np.inf)).astype(np.float64),
            t.left,
            t.right,
            t.missing_left,
            t.value,
        )
        for t in trees
    ]
    start = np.zeros(3)
    assert not np.array_equal(CompiledTrees(moved).sum(X, start), StackedTrees(trees).sum(X, start))


@pytest.mark.parametrize("by_rows", [False, True], ids=["by levels", "by rows"])
def test_nodes_in_any_order_are_walked_as_the_tree_says(by_rows: bool) -> None:
    """The walks renumber nodes breadth first, children side by side: a tree stored with its right
    children before its left ones, a node the root never reaches, NaN sent left at one split and
    right at another, and a lone leaf, still answer as the numpy walk does."""
    #        0: x0 <= 1 (NaN right)
    #       /            \
    #   4: leaf 10    1: x1 <= -2 (NaN left)      3: unreachable
    #                   /       \
    #               5: leaf 20   2: leaf 30
    tree = Tree(
        feature=np.array([0, 1, 0, 0, 0, 0]),
        threshold=np.array([1.0, -2.0, 0.0, 99.0, 0.0, 0.0]),
        left=np.array([4, 5, -1, -1, -1, -1]),
        right=np.array([1, 2, -1, -1, -1, -1]),
        missing_left=np.array([False, True, False, False, False, False]),
        value=np.array([[0.0], [0.0], [30.0], [1e6], [10.0], [20.0]]),
    )
    lone = Tree(
        np.zeros(1, int), np.zeros(1), np.array([-1]), np.array([-1]), np.zeros(1, bool), np.array([[0.5]])
    )
    nan = np.nan
    X = np.array(
        [[1.0, 0.0], [1.5, -2.0], [1.5, -1.0], [nan, nan], [nan, 5.0], [np.nextafter(1.0, 2.0), nan]]
    )
    got = CompiledTrees([tree, lone, tree], by_rows=by_rows).sum(X, np.array([0.25]))
    assert got.ravel().tolist() == [20.75, 40.75, 60.75, 40.75, 60.75, 40.75]
    expected = StackedTrees([tree, lone, tree]).sum(X, np.array([0.25]))
    assert (got.view(np.uint64) == expected.view(np.uint64)).all()


@pytest.mark.timeout(30)  # without the check, both walks of the levels below would never end
def test_nodes_that_are_not_a_tree_are_refused_at_build_not_walked_for_ever() -> None:
    """A node whose left child is itself (a cycle): refused when the walks are built, so the
    builder skips the evaluator instead of hanging the model's load."""
    cyclic = Tree(
        feature=np.zeros(2, int),
        threshold=np.zeros(2),
        left=np.array([0, -1]),
        right=np.array([1, -1]),
        missing_left=np.zeros(2, bool),
        value=np.zeros((2, 1)),
    )
    with pytest.raises(RuntimeError, match="not a tree"):
        CompiledTrees([cyclic])
    with pytest.raises(ValueError, match="not a tree"):
        StackedTrees([cyclic])


def _demo_reason() -> str:
    fast, reason, _, _ = build_demo(400, 10, 20_000)
    assert fast is not None, reason
    return reason


def _record_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The record size of every compiled walk built from now on."""
    built: list[int] = []
    init = CompiledTrees.__init__

    def recording(self: CompiledTrees, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        built.append(self.record_bytes)

    monkeypatch.setattr(CompiledTrees, "__init__", recording)
    return built


def test_a_forest_is_served_by_the_compiled_walks(monkeypatch: pytest.MonkeyPatch) -> None:
    """On 8-byte records: scikit-learn's forests read float32 inputs."""
    built = _record_sizes(monkeypatch)
    reason = _demo_reason()
    assert re.match(SERVED_BY_LEVELS, reason)
    assert built and set(built) == {8}


@pytest.mark.parametrize(
    ("model", "record_bytes"),
    [
        (GradientBoostingClassifier(n_estimators=5, max_depth=3, random_state=0), 8),
        (HistGradientBoostingRegressor(max_iter=5, random_state=0), 16),  # float64 inputs
    ],
    ids=["gradient boosting", "hist gradient boosting"],
)
def test_gradient_boosting_is_served_on_the_records_of_its_input_type(
    model: Any, record_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _record_sizes(monkeypatch)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=300) for i in range(4)})
    model.fit(frame, frame["x0"] > 0)
    specs = [ColumnSpec(f"x{i}", "double") for i in range(4)]
    fast, reason = build_fast_path(model, specs, converter(specs), n_random=1_000)
    assert fast is not None, reason
    assert re.match(SERVED_BY_LEVELS, reason)
    assert built and set(built) == {record_bytes}


@pytest.mark.parametrize("error", [ImportError("no numba"), TypeError("a numba that compiles otherwise")])
def test_without_the_compiled_walks_a_forest_falls_back_to_tree_apply(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def broken(narrow: bool = False) -> Any:
        raise error

    monkeypatch.setattr(compiled_module, "_kernels", broken)
    reason = _demo_reason()
    assert "compiled" not in reason
    assert re.match(r"(\S.* up to \d+ rows?, )?scikit-learn Tree.apply( above)?: ColumnTransformer", reason)


def test_rows_narrower_than_the_trees_read_are_refused() -> None:
    """The loops index X unchecked: a matrix without every feature a split reads never reaches them."""
    trees, splits = _forest_trees()
    X = _rows(4, len(NUMERIC), splits, np.float32)
    for by_rows in (False, True):
        with pytest.raises(ValueError, match="features"):
            CompiledTrees(trees, by_rows=by_rows).sum(X[:, :2], np.zeros(3))


def test_with_numbas_jit_disabled_the_walks_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """NUMBA_DISABLE_JIT would make the loops plain Python (minutes a load): they are skipped."""
    import numba

    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    compiled_module._compile.cache_clear()
    try:
        with pytest.raises(ImportError, match="disabled"):
            compiled_module._kernels()
    finally:
        monkeypatch.undo()
        compiled_module._compile.cache_clear()
    assert not isinstance(compiled_module._compile(), Exception)


def test_each_walk_by_levels_is_checked_against_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load's check runs the walk without the NaN test too, on its rows without NaN: a walk
    that is one step off there only (a batch holding a NaN never takes it) is not served."""

    def one_step_off(without_nan: compiled_module.Kernel) -> compiled_module.Kernel:
        def off(*args: Any) -> None:
            without_nan(*args)
            out = args[-1]
            out[:, 0] = np.nextafter(out[:, 0], np.inf)

        return off

    _wrap_walk_without_nan(monkeypatch, one_step_off)
    reason = _demo_reason()
    assert not re.match(SERVED_BY_LEVELS, reason)
    assert re.search(r"[1-9]\d* with a NaN", reason)  # its batch of check rows took the other walk
    monkeypatch.undo()  # the walks as they are
    assert re.match(SERVED_BY_LEVELS, _demo_reason())


def test_the_checks_rows_leave_half_without_nan_however_many_columns_take_it() -> None:
    """So that the walk without the NaN test is checked on many rows for a wide model too: NaN and
    unknown categories (an encoder may make NaN of them) in about half of the rows, and never in
    the rows that take the threshold values."""
    columns = [verify.Column(f"x{i}", "double", True, False, ()) for i in range(60)]
    columns.append(verify.Column("s", "string", False, True, ("a", "b")))
    rows = verify.random_rows(columns, {}, 4_000, np.random.default_rng(0), clean_first=1_000)
    unknown = rows["s"] == verify.UNKNOWN
    assert not verify.has_nan(rows)[:1_000].any()
    assert not unknown[:1_000].any()
    assert 0.45 < verify.has_nan(rows)[1_000:].mean() < 0.55
    assert unknown[1_000:].any()


def _wide_ordinal_forest(n_columns: int) -> tuple[Any, list[ColumnSpec]]:
    """A forest behind an OrdinalEncoder that turns unknown categories into NaN, on many columns."""
    rng = np.random.default_rng(0)
    names = [f"s{i}" for i in range(n_columns)]
    frame = pd.DataFrame({n: pd.Series(rng.choice(["a", "b"], 300), dtype=object) for n in names})
    frame["x"] = rng.normal(size=300)
    label = (frame["x"] > 0).astype(int) ^ (frame["s0"] == "a")
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
    model = Pipeline(
        [
            ("columns", ColumnTransformer([("codes", encoder, names)], remainder="passthrough")),
            ("forest", RandomForestClassifier(n_estimators=3, max_depth=5, random_state=0)),
        ]
    ).fit(frame, label)
    return model, [ColumnSpec(n, "string") for n in names] + [ColumnSpec("x", "double")]


def test_a_model_whose_encoder_makes_nan_of_unknown_categories_is_served() -> None:
    """Its rows without NaN are checked on the walk without the NaN test; none is refused for want
    of such rows (found by a review: 24 such columns left a chunk of 3,000 rows none)."""
    model, specs = _wide_ordinal_forest(30)
    fast, reason = build_fast_path(model, specs, converter(specs), n_random=3_000, chunk=3_000)
    assert fast is not None, reason
    assert re.match(SERVED_BY_LEVELS, reason)


def test_a_chunk_of_rows_all_with_nan_does_not_refuse_the_fast_path() -> None:
    """Rows without NaN are counted over the whole check, not chunk by chunk (found by a review: a
    check of 1,001 rows in chunks of 1,000 left a last chunk of one row, holding a NaN). Chunks of
    one row: every row with a NaN is such a chunk."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=300) for i in range(4)})
    model = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(frame, frame["x0"] > 0)
    specs = [ColumnSpec(f"x{i}", "double") for i in range(4)]
    fast, reason = build_fast_path(model, specs, converter(specs), n_random=1_000, chunk=1)
    assert fast is not None, reason
    assert re.match(SERVED_BY_LEVELS, reason)
    assert re.search(r"[1-9]\d* with a NaN", reason)


def test_a_walk_that_fails_when_run_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(self: CompiledTrees, X: np.ndarray, start: np.ndarray) -> np.ndarray:
        raise RuntimeError("fails on every call")

    monkeypatch.setattr(CompiledTrees, "sum", failing)
    reason = _demo_reason()
    assert "compiled" not in reason
    assert "Tree.apply" in reason


def test_the_walks_are_timed_on_rows_spread_over_the_splits() -> None:
    """Rows that all go one way at every split would flatter the branching walk by rows."""
    from model_api.fastpath.build import _timing_rows

    splits = {0: np.array([18.0, 40.0, 65.0]), 2: np.array([-np.inf, 2e4, 5e4, 9e4, np.inf])}
    X = _timing_rows(splits, 4, 128, np.random.default_rng(0))
    assert X.shape == (128, 4)
    for j, values in splits.items():
        for split in values[np.isfinite(values)][1:-1]:
            assert 0.2 < (X[:, j] <= split).mean() < 0.8
    assert (X[:, 1] == 0).all() and (X[:, 3] == 0).all()
