"""Model API: serve an MLflow-registered model over HTTP."""

__version__ = "0.1.0"
