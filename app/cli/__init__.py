"""Layer 7, cli: every command line (``python -m app.cli COMMAND``, ``ris``, ``scripts/*.py``), their
shared options and the one handler that turns typed errors into a one-line message and exit code 2.

The command modules import the service and metrics layers inside their command functions, the one
place in the app where that is the rule: every command line parses all the commands' options first,
and ``python -m app.cli --help`` takes 0.18 s that way against 0.27 s with every layer imported at
start (``/usr/bin/time``, three runs each, 2 cores). Every other module imports at its top, except
``app/web/server.py`` (measured in its docstring) and ``app/service/query_objects.py`` (a cycle with
``search.py``).
"""

from app.cli.main import main

__all__ = [
    "main",
]
