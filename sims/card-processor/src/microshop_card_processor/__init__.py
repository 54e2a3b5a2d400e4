"""Simulated card processor: an "outside system" standing in for a third-party PSP."""

__version__ = "0.1.0"
