"""microshop storefront: the shop in a browser (a backend for frontend over the gateway)."""

__version__ = "0.1.0"
