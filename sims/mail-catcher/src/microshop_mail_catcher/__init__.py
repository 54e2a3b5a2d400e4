"""Mail catcher: an SMTP server that keeps every message and serves it over HTTP.

The in-process entry point is ``microshop_mail_catcher.app.start``.
"""

__version__ = "0.1.0"  # keep in step with pyproject.toml
