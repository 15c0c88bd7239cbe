"""Layer 7, web: the Gradio app over the search service.

``handlers`` composes the handler groups (``queries``: query sources; ``session_handlers``: session and
history; ``collections``: the collection menu and examples; ``library``: the Collections tab;
``duplicates``: the Duplicates tab and ``/duplicates``; ``api``:
the API's endpoints) over ``context`` (what they share); searches run through ``runner`` and errors become
messages in ``guarded``. Handlers answer a ``view.View``; ``outputs`` keys it by the components of
``page``; ``layout`` builds the page and wires the events; ``server`` serves it (FastAPI + uvicorn, Host
check in ``guard``, file routes, limits).

Exported here, and imported from here by callers outside the package: the server's entry points, which
import nothing heavy (Gradio, the model and the indexes load when the app is made). The handler groups,
the page and the layout are imported from their modules.
"""

from app.web.server import (
    AUTH_ENV,
    StartupError,
    allowed_hosts,
    check_bind,
    create_app,
    is_loopback,
    make_server,
    parse_auth,
    serve,
    warm_up,
)

__all__ = [
    "AUTH_ENV",
    "StartupError",
    "allowed_hosts",
    "check_bind",
    "create_app",
    "is_loopback",
    "make_server",
    "parse_auth",
    "serve",
    "warm_up",
]
