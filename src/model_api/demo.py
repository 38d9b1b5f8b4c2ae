"""The embedded default: a synthetic churn table, a scikit-learn pipeline, registered in MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_api.registration import find_alias, register_sklearn_model

logger = logging.getLogger(__name__)

MODEL_NAME = "ChurnPredictor"
ALIAS = "champion"
EXPERIMENT = "churn-demo"
SEED = 42

NUMERIC = ["tenure_months", "monthly_charges", "total_charges", "support_calls", "num_services", "age"]
CATEGORICAL = ["contract", "payment_method", "internet_service", "paperless_billing"]
CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENTS = ["electronic-check", "mailed-check", "bank-transfer", "credit-card"]
INTERNET = ["dsl", "fiber-optic", "none"]
YES_NO = ["yes", "no"]


def make_churn_table(n_rows: int = 4000, seed: int = SEED) -> tuple[pd.DataFrame, pd.Series]:
    """A deterministic, realistic customer table and its churn label.

    Churn rises with month-to-month contracts, short tenure, high charges, support calls, fiber
    service and electronic-check payment, as it does in the telecom churn data sets.
    """
    rng = np.random.default_rng(seed)
    contract = rng.choice(CONTRACTS, size=n_rows, p=[0.55, 0.25, 0.20])
    tenure = (
        np.where(
            contract == "month-to-month",
            rng.gamma(1.5, 10.0, n_rows),
            rng.gamma(3.0, 14.0, n_rows),
        )
        .clip(1, 72)
        .round()
        .astype(np.int64)
    )
    internet = rng.choice(INTERNET, size=n_rows, p=[0.35, 0.45, 0.20])
    num_services = rng.integers(1, 7, size=n_rows).astype(np.int64)
    base = np.select([internet == "fiber-optic", internet == "dsl"], [70.0, 50.0], 20.0)
    monthly = (base + 5.0 * num_services + rng.normal(0, 8, n_rows)).clip(18, 120).round(2)
    total = (monthly * tenure * rng.uniform(0.9, 1.05, n_rows)).round(2)
    payment = rng.choice(PAYMENTS, size=n_rows, p=[0.35, 0.2, 0.22, 0.23])
    support_calls = rng.poisson(1.2 + 1.5 * (internet == "fiber-optic"), n_rows).astype(np.int64)
    age = rng.integers(18, 85, size=n_rows).astype(np.int64)
    paperless = rng.choice(YES_NO, size=n_rows, p=[0.6, 0.4])

    logit = (
        -1.2
        + 1.6 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year")
        - 0.045 * tenure
        + 0.018 * (monthly - 65.0)
        + 0.38 * support_calls
        + 0.55 * (payment == "electronic-check")
        + 0.45 * (internet == "fiber-optic")
        + 0.25 * (paperless == "yes")
        + 0.01 * (age - 45)
    )
    churned = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": support_calls,
            "num_services": num_services,
            "age": age,
            "contract": pd.Series(contract, dtype=object),
            "payment_method": pd.Series(payment, dtype=object),
            "internet_service": pd.Series(internet, dtype=object),
            "paperless_billing": pd.Series(paperless, dtype=object),
        }
    )
    return frame, pd.Series(churned.astype(np.int64), name="churned")


def build_pipeline(n_trees: int = 100, seed: int = SEED) -> Any:
    """Scaler and one-hot encoder in front of a random forest; unknown categories are refused."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = ColumnTransformer(
        [
            ("numeric", StandardScaler(), NUMERIC),
            ("categorical", OneHotEncoder(handle_unknown="error"), CATEGORICAL),
        ]
    )
    forest = RandomForestClassifier(
        n_estimators=n_trees, max_depth=12, min_samples_leaf=3, n_jobs=1, random_state=seed
    )
    return Pipeline([("features", features), ("model", forest)])


@dataclass(frozen=True)
class DemoModel:
    """Where the demo model was registered."""

    name: str
    version: str
    alias: str
    run_id: str
    created: bool


def ensure_demo_model(
    tracking_uri: str,
    artifact_dir: Path,
    *,
    name: str = MODEL_NAME,
    alias: str = ALIAS,
    n_rows: int = 4000,
    n_trees: int = 100,
) -> DemoModel:
    """Train and register the demo model unless `name@alias` already resolves; returns where it is."""
    existing = find_alias(tracking_uri, name, alias)
    if existing is not None:
        return DemoModel(name, existing.version, alias, existing.run_id, created=False)

    frame, label = make_churn_table(n_rows)
    pipeline = build_pipeline(n_trees)
    pipeline.fit(frame, label)
    accuracy = float(pipeline.score(frame, label))
    registered = register_sklearn_model(
        pipeline,
        tracking_uri=tracking_uri,
        name=name,
        alias=alias,
        experiment=EXPERIMENT,
        artifact_dir=artifact_dir,
        input_example=frame.head(3),
        params={"n_trees": n_trees, "n_rows": n_rows, "max_depth": 12},
        metrics={"train_accuracy": accuracy},
    )
    logger.info(
        "registered %s version %s as @%s (train accuracy %.3f)", name, registered.version, alias, accuracy
    )
    return DemoModel(name, registered.version, alias, registered.run_id, created=True)
