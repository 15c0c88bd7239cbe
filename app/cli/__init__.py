"""Layer 7, cli: every command line (``python -m app.cli COMMAND``, ``ris``, ``scripts/*.py``), their
shared options and the one handler that turns typed errors into a one-line message and exit code 2."""

from app.cli.main import main

__all__ = [
    "main",
]
