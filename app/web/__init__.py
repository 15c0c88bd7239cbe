"""Layer 7, web: the Gradio app over the search service.

``handlers`` composes the handler groups (``queries``: query sources; ``session``: session and
history; ``collections``: the collection menu and examples) over what ``common`` shares;
``view_model`` holds the UI's data and formatting; ``layout`` lays out the page and wires the
groups' events; ``server`` serves it (FastAPI + uvicorn, Host check, file routes, limits).

Exported here: the server's entry points, which import nothing heavy (Gradio, the model and the
indexes load when the app is created). Import the handler groups and the layout from their modules.
"""

from app.web.server import AUTH_ENV, StartupError, check_bind, create_app, parse_auth, serve

__all__ = [
    "AUTH_ENV",
    "StartupError",
    "check_bind",
    "create_app",
    "parse_auth",
    "serve",
]
