"""Compiled tree inference, bit-identical to the model or not served at all.

`build_fast_path(model, columns, to_frame)` compiles a fitted tree ensemble (scikit-learn
RandomForest, ExtraTrees, GradientBoosting, HistGradientBoosting; XGBoost; LightGBM), alone or as
the last step of a Pipeline of StandardScaler, RobustScaler, MinMaxScaler, MaxAbsScaler,
OneHotEncoder, OrdinalEncoder, SimpleImputer, MissingIndicator and ColumnTransformer steps, into
numpy preprocessing plus a tree evaluator (treelite GTIL where it is exact, else numpy), then
checks it against the model on rows built from the model's own split thresholds. Modules:
`preprocess` (the transformers), `stacked` and `trees` / `boosters` (the evaluators), `verify`
(the rows and the bit comparison), `build` (the interface).
"""

from model_api.fastpath.build import ColumnSpec, FastPath, build_fast_path

__all__ = ["ColumnSpec", "FastPath", "build_fast_path"]
