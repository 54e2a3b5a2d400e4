"""microshop's embedded telemetry receiver: OTLP/HTTP traces in, a bounded SQLite span store, a query API."""

__version__ = "0.1.0"
