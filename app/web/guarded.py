"""The error guards of the page's events: a typed error (:class:`app.errors.AppError`) becomes its
readable message, anything else is logged server-side and shown as a generic one. With ``app.cli``, this
is where the core's typed errors become messages for people (the API's endpoints have their own guard,
:func:`app.web.api.api_errors`); no traceback ever reaches the browser.

* :func:`guarded`: for the methods of a handler group, which answer a :class:`~app.web.view.View`;
* :func:`guarded_text`: for the Collections tab's actions, which answer one line of Markdown;
* :func:`guarded_answer`: for its events that answer a dict (the error's line goes where ``answer`` puts it).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from app.errors import AppError
from app.web.text import error_md
from app.web.view import View

log = logging.getLogger(__name__)


def guarded(action: str, answer: Callable[[str], Any] | None = None) -> Callable:
    """Turn errors into a readable message (typed) or a generic one (unexpected, logged), shown on the
    page's message line (or what ``answer`` makes of the message, for a group with answers of its own) and
    as a toast.

    For methods of a handler group, which has the shared :class:`~app.web.context.Context` as ``self.ctx``.
    """

    def deco(fn: Callable[..., View]) -> Callable[..., View]:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> View:
            try:
                return fn(self, *args, **kwargs)
            except AppError as exc:
                text = exc.user_message()
                log.info("%s: %s", action, text)
            except Exception:  # noqa: BLE001 - the browser gets a message, the log gets the traceback
                log.exception("unexpected error while %s", action)
                text = f"Something went wrong while {action}. The details are in the server log."
            self.ctx.toast(text)
            return answer(text) if answer else View(message=error_md(text))

        return wrapper

    return deco


def guarded_text(fn: Callable[..., str]) -> Callable[..., str]:
    """``fn``'s one-line answer; a typed error's message, or a generic one (the traceback is logged)."""
    return guarded_answer(fn, lambda line: line)


def guarded_answer(fn: Callable[..., Any], answer: Callable[[str], Any]) -> Callable[..., Any]:
    """``fn``'s answer; on an error, what ``answer`` makes of the error's line (Markdown): a typed error's
    message, or a generic one (the traceback is logged). For the Collections tab's events."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except AppError as exc:
            return answer(error_md(exc.user_message()))
        except Exception:  # noqa: BLE001 - the page gets a message, the log the traceback
            log.exception("Collections tab: %s failed", getattr(fn, "__name__", "an event"))
            return answer(error_md("Something went wrong. The details are in the server log."))

    return wrapper
