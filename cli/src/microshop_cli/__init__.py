"""The ``microshop`` command: launcher and supervisor of the whole system on one machine."""

__version__ = "0.1.0"
