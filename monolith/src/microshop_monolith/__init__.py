"""microshop as a monolith: the same services' code, composed in one process (compose.py)."""

__version__ = "0.1.0"
