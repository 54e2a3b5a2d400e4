"""microshop gateway: the only public entry to the system."""

__version__ = "0.1.0"
