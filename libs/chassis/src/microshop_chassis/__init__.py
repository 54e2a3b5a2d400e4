"""microshop chassis: the cross-cutting code every service shares (the "microservice chassis" pattern).

The chassis imports no service. A service imports the chassis and nothing of any other service.
"""

__version__ = "0.1.0"
