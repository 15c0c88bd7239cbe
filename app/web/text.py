"""The page's text: Markdown made safe (:func:`md_escape`), error and warning lines, and the status line
(HTML)."""

from __future__ import annotations

import html
import re
from typing import Any

from app.service.search import Hit, QueryResult
from app.web.gallery import caption

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(text: str) -> str:
    """Text shown literally in a Markdown component: no HTML, no Markdown markup."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def error_md(text: str) -> str:
    return f"⚠️ {md_escape(text)}"


def status_html(result: QueryResult, engine: str, seq: int) -> str:
    """The status line after a search: how many results of how many images (of how many matching, for a
    limited search; its cut-off band), each stage's time, the engine.
    ``data-seq`` (searches so far) and ``data-top`` (the best match's caption) are for scripts and tests."""
    parts = [f"<b>{len(result.hits)}</b> of {result.size:,} images in <b>{html.escape(result.collection)}</b>"]
    if result.matching is not None:  # a search limited to a folder, dates or a camera
        parts[0] = (f"<b>{len(result.hits)}</b> of {result.matching:,} matching ({result.size:,} images) in "
                    f"<b>{html.escape(result.collection)}</b>")
    if result.where is not None and result.where.min_band:
        parts.append(f"{html.escape(result.where.min_band)} or closer")
    if result.reused:
        parts.append("stored vector, model not run")
    elif result.ms("embed") == 0:
        parts.append(f"decode {result.ms('decode'):.1f} ms")
        parts.append("remembered query vector, model not run")
    else:
        parts.append(f"decode {result.ms('decode'):.1f} ms")
        parts.append(f"preprocess {result.ms('preprocess'):.1f} ms")
        parts.append(f"embed {result.ms('embed'):.1f} ms")
    return status_line(parts, result, engine, seq, caption(result.hits[0]) if result.hits else "")


def status_line(parts: list[str], result: Any, engine: str, seq: int, top: str) -> str:
    """``parts``, then the search and total times and the engine, as the status line; ``top``: the best
    match's caption (``data-top``), ``seq`` the searches so far (``data-seq``)."""
    parts = [*parts, f"search {result.ms('search'):.2f} ms", f"total {result.ms('total'):.1f} ms", html.escape(engine)]
    spans = " · ".join(f"<span>{p}</span>" for p in parts)
    return f'<div class="ris-status" data-seq="{seq}" data-top="{html.escape(top, quote=True)}">{spans}</div>'


def idle_status(text: str) -> str:
    """The status line when nothing is searched."""
    return f'<div class="ris-status" data-seq="0"><span>{html.escape(text)}</span></div>'


def missing_md(missing: list[Hit], collection: str) -> str:
    """The warning shown when result files are gone from disk since the collection was indexed."""
    if not missing:
        return ""
    names = ", ".join(md_escape(h.path) for h in missing[:3]) + (" …" if len(missing) > 3 else "")
    n = len(missing)
    return (f"⚠️ {n} result image{'s are' if n > 1 else ' is'} missing on disk or unreadable ({names}); "
            f"{'they show' if n > 1 else 'it shows'} as a placeholder. Rebuild {md_escape(collection)} "
            "to bring the collection up to date.")


def nothing_within_md(result: QueryResult) -> str:
    """The message when a limited search found nothing (the limits say why), else ""."""
    if result.hits or result.where is None:
        return ""
    if result.matching == 0:
        return "⚠️ No image passes the limits (*Limit to*): widen the folder, dates or camera."
    return (f"⚠️ No result is {md_escape(result.where.min_band or '')} or closer: lower *At least* under "
            "*Limit to*.")
