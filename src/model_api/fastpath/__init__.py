"""Compiled tree inference, bit-identical to the model or not served at all.

`build_fast_path(model, columns, to_frame)` compiles a fitted tree ensemble (scikit-learn
RandomForest, ExtraTrees, GradientBoosting, HistGradientBoosting; XGBoost; LightGBM), alone or as
the last step of a Pipeline of StandardScaler, RobustScaler, MinMaxScaler, MaxAbsScaler,
OneHotEncoder, OrdinalEncoder, SimpleImputer, MissingIndicator and ColumnTransformer steps, into
numpy preprocessing plus a tree evaluator (a tree walk compiled by numba for scikit-learn's
forests and gradient boosting models, treelite GTIL or the library's own predict for XGBoost and
LightGBM), then checks it against the model on rows built from the model's own split thresholds.
Modules: `base`, `preprocess`, `encoders` (the transformers), `stacked`, `compiled`, `trees`,
`boosters` (the evaluators), `verify` (the rows and the bit comparison),
`path` (FastPath, what a request runs), `build` (compile and check).
"""

from model_api.fastpath.build import build_fast_path
from model_api.fastpath.path import ColumnSpec, FastPath

__all__ = ["ColumnSpec", "FastPath", "build_fast_path"]
