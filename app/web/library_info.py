"""What the Collections tab shows about each collection, as plain text: the table's rows (name, images,
model, status, folder, last update, watched, skipped), one collection's details and what its last scan
skipped (with the reasons, on demand), and the library roots as code spans.

Read from the catalogue (a collection ready to search is loaded already) or, for one that is not, from
its manifest; nothing here changes a collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.errors import AppError
from app.service.collection_store import open_collection
from app.web.context import Context
from app.web.text import md_escape

HEADERS = ["collection", "images", "model", "status", "folder", "last update", "watched", "skipped"]
SKIPPED_SHOWN = 50  # reasons listed on the page; the rest are counted


def code_span(text: Any) -> str:
    """``text`` as a Markdown code span, shown literally: nothing inside a code span is Markdown, so
    nothing is escaped (a backslash would show); a backtick in it gets a longer fence."""
    text = str(text)
    run = _longest_backtick_run(text)
    fence = "`" * (run + 1)
    pad = " " if run or text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _longest_backtick_run(text: str) -> int:
    best = cur = 0
    for ch in text:
        cur = cur + 1 if ch == "`" else 0
        best = max(best, cur)
    return best


def _when(stamp: str) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM`` (UTC), for the table."""
    return stamp[:16].replace("T", " ") if stamp else ""


def _info(ctx: Context, name: str | None):
    """The collection ``name``'s info, read again when it is new since the list was read."""
    if not name:
        return None
    if ctx.info(name) is None:
        ctx.refresh()
    return ctx.info(name)


def _manifest(ctx: Context, name: str):
    try:
        col = ctx.service.collection(name) if (info := ctx.info(name)) is not None and info.ready else None
        return col.manifest if col is not None else open_collection(ctx.config, name).manifest()
    except AppError:
        return None


def collection_rows(ctx: Context, watched: set[str]) -> list[list[Any]]:
    """The table of collections (columns :data:`HEADERS`); ``ctx`` is read again first."""
    ctx.refresh()
    running, out = ctx.running_model, []
    for info in ctx.infos:
        status = "ready" if info.ready else (f"built with {info.model}" if info.model and info.model != running
                                             else "not built")
        m = _manifest(ctx, info.name)
        folder = (m.image_root or m.dataset_root or "") if m is not None else ""
        out.append([info.name, info.size if info.ready else 0, info.model or "", status, folder,
                    _when(m.built_at) if m is not None else "", "yes" if info.name in watched else "no",
                    m.skipped if m is not None else 0])
    return out


def skipped_md(ctx: Context, name: str | None) -> str:
    """What the last scan of ``name`` skipped, one file a line with its reason."""
    info = _info(ctx, name)
    if info is None:
        return ""
    if not info.ready:
        m = _manifest(ctx, info.name)
        n = m.skipped if m is not None else 0
        return f"{n:,} files skipped; the reasons show once {md_escape(info.name)} is built for this model."
    skipped = ctx.service.collection(info.name).table.skipped
    if not skipped:
        return "The last scan skipped nothing."
    lines = [f"The last scan skipped {len(skipped):,} file{'s' if len(skipped) != 1 else ''}:"]
    lines += [f"- {code_span(s.get('path', ''))}: {md_escape(s.get('reason', ''))}" for s in skipped[:SKIPPED_SHOWN]]
    if len(skipped) > SKIPPED_SHOWN:
        lines.append(f"- … and {len(skipped) - SKIPPED_SHOWN:,} more")
    return "\n".join(lines)


def details_md(ctx: Context, name: str | None, watched: bool) -> str:
    """One collection's folder, last update, watch state and skipped count."""
    info = _info(ctx, name)
    if info is None:
        return "Choose a collection to change it."
    m = _manifest(ctx, info.name)
    folder = (m.image_root or m.dataset_root or "") if m is not None else ""
    parts = [f"**{md_escape(info.name)}**: {info.size:,} images" if info.ready else f"**{md_escape(info.name)}**: "
             "not built for this model",
             f"folder {code_span(folder)}" if folder else "no folder recorded",
             f"last update {_when(m.built_at)} UTC" if m is not None and m.built_at else "never updated",
             "watched" if watched else "not watched",
             f"{m.skipped:,} skipped by the last scan" if m is not None else ""]
    return " · ".join(p for p in parts if p)


def folder_of(ctx: Context, name: str) -> Path | None:
    """The folder ``name`` was built from (None when its manifest does not say)."""
    m = _manifest(ctx, name)
    folder = (m.image_root or m.dataset_root) if m is not None else None
    return Path(folder) if folder else None


def built_with(ctx: Context, name: str) -> tuple[str, str] | None:
    """The (model, weights id) ``name`` was built with (None when its manifest cannot be read)."""
    m = _manifest(ctx, name)
    return (m.model_name, m.weights_id) if m is not None else None
