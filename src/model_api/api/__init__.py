"""HTTP routers: the service's own endpoints and the inference protocols."""
