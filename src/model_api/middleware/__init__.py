"""ASGI middleware, one a file; `main.py` lists the stack, outermost first."""
