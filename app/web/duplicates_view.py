"""What the Duplicates tab shows, as plain data: the groups found (:class:`Finding`, kept in the browser
session's state, with each :class:`DupGroup` and :class:`DupMember`), what an event of the tab answers
(:class:`DupView`, one field a part of the tab; :data:`app.web.view.SKIP` leaves it as it is), and its text:
captions, the side-by-side facts of two photos (size, date, file size) and the status lines.
:class:`app.web.duplicates_tab.DuplicatesTab` keys a :class:`DupView` by its components."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.web.text import md_escape
from app.web.view import SKIP

ALL_TIERS = "all"  # the tier choice that lists every tier


@dataclass(frozen=True)
class DupMember:
    """One photo of a group: its id, its path as the collection stores it, its file, and its facts."""

    id: int
    file: str  # relative to the collection's folder (absolute for one added from outside it)
    abs_path: str
    width: int
    height: int
    bytes: int | None
    mtime_ns: int | None

    @property
    def name(self) -> str:
        return Path(self.file).name


@dataclass(frozen=True)
class DupGroup:
    tier: str
    score: float
    keeper: int  # the suggested keeper's id
    members: tuple[DupMember, ...]

    def member(self, item_id: Any) -> DupMember | None:
        return next((m for m in self.members if str(m.id) == str(item_id)), None)

    def others(self, keep: int) -> list[DupMember]:
        return [m for m in self.members if m.id != keep]


@dataclass
class Finding:
    """The groups found in one collection, largest first, and which is on screen (the session's state)."""

    collection: str
    tier: str
    strictness: str
    groups: list[DupGroup] = field(default_factory=list)
    selected: int = -1  # the index of the group on screen (-1: none)

    @property
    def group(self) -> DupGroup | None:
        return self.groups[self.selected] if 0 <= self.selected < len(self.groups) else None


@dataclass
class DupView:
    """The outputs of a Duplicates tab event; :data:`~app.web.view.SKIP` leaves a part unchanged."""

    status: Any = SKIP  # the status line (Markdown)
    finding: Any = SKIP  # the session's :class:`Finding` (or None)
    groups: Any = SKIP  # gallery items: one per group, its keeper's thumbnail
    members: Any = SKIP  # gallery items: the group on screen, the keeper marked
    pair: Any = SKIP  # (choices, left id, right id) of the two photos compared
    compare: Any = SKIP  # (left preview, right preview), or None
    facts: Any = SKIP  # the two photos' size, date and file size (Markdown)
    keep: Any = SKIP  # (choices, id): which photo of the group is kept
    confirm: Any = SKIP  # the question before a clean-up (Markdown), or None to hide it
    timer: Any = SKIP  # True while a search for duplicates runs (the page polls)

    def changed(self) -> dict[str, Any]:
        """The fields this view sets, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not SKIP}


def group_caption(n: int, group: DupGroup) -> str:
    return f"{n} · {group.tier} · {len(group.members)} photos · {group.score:.3f}"


def member_caption(member: DupMember, keeper: int) -> str:
    mark = "★ keep · " if member.id == keeper else ""
    return f"{mark}{member.name} · {member.width}×{member.height}"


def member_choices(group: DupGroup) -> list[tuple[str, int]]:
    """The dropdown choices of a group's members: (label, id), the suggested keeper marked."""
    return [(f"{m.name} (id {m.id}){' · suggested keeper' if m.id == group.keeper else ''}", m.id)
            for m in group.members]


def size_text(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def date_text(mtime_ns: int | None) -> str:
    if not mtime_ns:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))


def facts_md(left: DupMember, right: DupMember) -> str:
    """A table of the two photos compared: file, size in pixels, date (modified) and file size."""
    rows = [("file", md_escape(left.file), md_escape(right.file)),
            ("size", f"{left.width} × {left.height} px", f"{right.width} × {right.height} px"),
            ("date (modified)", date_text(left.mtime_ns), date_text(right.mtime_ns)),
            ("file size", size_text(left.bytes), size_text(right.bytes))]
    lines = ["| | left | right |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def found_md(finding: Finding, seconds: float, measured: int, clean_off: str, shown: int) -> str:
    """The status line after a search for duplicates (the gallery shows the largest ``shown`` groups)."""
    n = len(finding.groups)
    photos = sum(len(g.members) for g in finding.groups)
    tier = "every tier" if finding.tier == ALL_TIERS else f"tier {finding.tier}"
    head = (f"**{md_escape(finding.collection)}**: {n} group{'s' if n != 1 else ''} ({photos} photos), "
            f"{tier}, strictness {finding.strictness}; {measured} photos read, {seconds:.1f} s.")
    if not n:
        return head + " No duplicates found."
    if n > shown:
        head += f" The largest {shown} are shown (the `/duplicates` endpoint and the command line list all)."
    return head + (f" {clean_off}" if clean_off else " Click a group to review it.")


def moved_md(moves: list[dict[str, Any]], trash: str, line: str) -> str:
    """The status line after a clean-up: what went to the trash folder, what could not, and the change."""
    moved = [m for m in moves if m["state"] == "moved"]
    failed = [m for m in moves if m["state"] == "failed"]
    out = [f"Moved {len(moved)} photo{'s' if len(moved) != 1 else ''} to {md_escape(trash)} "
           f"(nothing was deleted; *Undo the last clean-up* puts them back). Collection: {md_escape(line)}."]
    out += [f"- not moved: {md_escape(m['path'])}: {md_escape(m.get('note', ''))}" for m in failed]
    return "\n".join(out)


def restored_md(moves: list[dict[str, Any]], line: str) -> str:
    """The status line after an undo: what came back (and where, when not at its place)."""
    back = [m for m in moves if m["state"] == "restored"]
    out = [f"Restored {len(back)} photo{'s' if len(back) != 1 else ''} from the trash. Collection: {md_escape(line)}. "
           "Find again to list the groups."]
    out += [f"- {md_escape(m['note'])}" for m in moves if m.get("note")]
    return "\n".join(out)
