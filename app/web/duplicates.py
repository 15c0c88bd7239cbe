"""The Duplicates tab's behaviour (:class:`DuplicateHandlers`), and the ``/duplicates`` API endpoint's.

Finding duplicates (:func:`app.service.duplicates.find_duplicates`) can take minutes on a first run (every
photo is read once), so the tab runs it in a thread of its own, one at a time, and the page polls
:meth:`DuplicateHandlers.poll` (a ``gr.Timer`` in :mod:`app.web.duplicates_tab`); searching goes on meanwhile.
The groups it found live in the browser session (:class:`~app.web.duplicates_view.Finding`): the tab shows
them largest first, one group's members at a time, two of them side by side with their facts.

A clean-up keeps one photo of a group and moves the others to the trash folder of the collection
(:func:`app.service.dedup_trash.clean_groups`: nothing is deleted; the collection changes incrementally);
*Undo* restores the last clean-up (:func:`app.service.dedup_trash.undo_clean`). Both are allowed only for a
collection whose folder (and each photo moved) is under a ``--library-root``, as the Collections tab's changes
(:func:`app.web.library.library_path`). Typed errors become the tab's status line in :func:`_guarded`.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from app.errors import AppError, DatasetError
from app.service.commit import read_state
from app.service.dedup_trash import clean_groups, last_batch, trash_dir, undo_clean
from app.service.duplicates import STRICTNESS, TIERS, DuplicateReport, find_duplicates
from app.web.context import Context
from app.web.duplicates_view import (
    ALL_TIERS,
    DupGroup,
    DupMember,
    DupView,
    Finding,
    facts_md,
    found_md,
    group_caption,
    member_caption,
    member_choices,
    moved_md,
    restored_md,
)
from app.web.guarded import guarded
from app.web.library import LibraryRootError, library_path
from app.web.text import error_md, md_escape
from app.web.view import SKIP

log = logging.getLogger(__name__)

TIER_CHOICES = (ALL_TIERS, *TIERS)
SHOWN_GROUPS = 300  # the groups gallery shows the largest this many (a thumbnail each); /duplicates answers all
CLEARED = dict(finding=None, groups=[], members=[], pair=([], None, None), compare=None, facts="", keep=([], None),
               confirm=None)  # a DupView's fields that empty the tab's review part


def _guarded(action: str):
    return guarded(action, lambda text: DupView(status=error_md(text), confirm=None))


@dataclass
class FindJob:
    """A search for duplicates running in its own thread, and how it ended."""

    collection: str
    tier: str
    strictness: str
    started: float = field(default_factory=time.monotonic)
    finding: Finding | None = None
    summary: str = ""
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class DuplicateHandlers:
    """The Duplicates tab's events and the ``/duplicates`` endpoint."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.roots: tuple[Path, ...] = tuple(Path(r) for r in ctx.config.library_roots)
        self.job: FindJob | None = None
        self._start = threading.Lock()
        self._busy = threading.Lock()  # one search for duplicates, clean-up or undo at a time

    def choices(self) -> list[str]:
        """The collections that are built (with any model): their vectors are what the finder groups."""
        self.ctx.refresh()
        return [i.name for i in self.ctx.infos if i.ready or i.model]

    def roots_md(self) -> str:
        if not self.roots:
            return ("Finding duplicates works on any collection. Moving them to a trash folder is off: start the app "
                    "with `--library-root DIR` to allow it for collections whose folder is under `DIR` "
                    "(or use `python -m app.cli duplicates --clean`).")
        return ("Keeping one photo of a group moves the others to a trash folder inside the collection's folder "
                "(nothing is deleted; *Undo* puts them back), for collections whose folder is under "
                + ", ".join(md_escape(r) for r in self.roots) + ".")

    # -- finding -----------------------------------------------------------------------------------
    def report(self, collection: str, tier: str | None, strictness: str | None) -> tuple[DuplicateReport, Path]:
        """The groups of ``collection`` (waits for a search that runs), and the collection's folder."""
        name = self.ctx.existing(collection)
        tier, strictness = _checked(tier, strictness)
        with self._busy:
            report = find_duplicates(self.ctx.config, name, tier=None if tier == ALL_TIERS else tier,
                                     strictness=strictness)
        return report, Path(read_state(self.ctx.config, name).table.image_root)

    def groups_json(self, collection: str, tier: str | None, strictness: str | None) -> dict[str, Any]:
        """The ``/duplicates`` endpoint's answer: the groups, largest first, each member with its facts."""
        report, _ = self.report(collection, tier, strictness)
        groups = []
        for g in report.groups:
            out = g.to_json(report.paths)
            out["members"] = [{**m, **report.facts.get(m["id"], {})} for m in out["members"]]
            groups.append(out)
        return {"collection": report.collection, "tier": (tier or ALL_TIERS), "strictness": strictness or "default",
                "groups": groups, "measured": report.measured, "searched": report.searched,
                "seconds": round(report.seconds, 3)}

    @_guarded("finding duplicates")
    def start(self, collection: str | None, tier: str | None, strictness: str | None) -> DupView:
        """Find: start the search in its own thread; the page polls :meth:`poll`."""
        name = self.ctx.existing(collection)
        tier, strictness = _checked(tier, strictness)
        with self._start:
            if self.running():
                raise AppError(f"Duplicates in {self.job.collection} are being found; wait for it to finish.")
            job = self.job = FindJob(name, tier, strictness)
        threading.Thread(target=self._run, args=(job,), name=f"duplicates-{name}", daemon=True).start()
        return DupView(status=f"Finding duplicates in **{md_escape(name)}**… (a first run reads every photo once)",
                       timer=True, **CLEARED)

    def _run(self, job: FindJob) -> None:
        try:
            report, root = self.report(job.collection, job.tier, job.strictness)
            job.finding = finding_of(report, root, job.tier, job.strictness)
            job.summary = found_md(job.finding, report.seconds, report.measured, self.clean_off(job.collection, root),
                                   SHOWN_GROUPS)
        except AppError as exc:
            job.error = exc.user_message()
        except Exception:  # noqa: BLE001 - the page gets a message, the log the traceback
            log.exception("finding duplicates in %s failed", job.collection)
            job.error = "Finding duplicates failed. The details are in the server log."
        finally:
            job.done.set()

    def running(self) -> bool:
        return self.job is not None and not self.job.done.is_set()

    @_guarded("finding duplicates")
    def poll(self) -> DupView:
        """The timer's tick: the time so far, or the groups found (then the timer stops)."""
        job = self.job
        if job is None:
            return DupView(timer=False)
        if not job.done.is_set():
            return DupView(status=f"Finding duplicates in **{md_escape(job.collection)}**… "
                                  f"{time.monotonic() - job.started:.0f} s")
        if job.error:
            return DupView(status=error_md(job.error), timer=False)
        finding = job.finding
        view = self.on_group(0, finding) if finding.groups else DupView(**CLEARED)
        view.status, view.timer, view.finding = job.summary, False, finding
        view.groups = self._group_items(finding)
        return view

    # -- reviewing a group ---------------------------------------------------------------------------
    @_guarded("showing the group")
    def on_group(self, index: int, finding: Finding | None) -> DupView:
        """A group clicked: its members (the keeper marked), the keeper and another side by side."""
        if finding is None or not 0 <= int(index) < len(finding.groups):
            return DupView()
        finding.selected = int(index)
        g = finding.group
        view = self._pair(g, g.keeper, g.others(g.keeper)[0].id)
        view.members = [(self._thumb(m), member_caption(m, g.keeper)) for m in g.members]
        view.keep, view.confirm, view.finding = (member_choices(g), g.keeper), None, finding
        return view

    @_guarded("comparing")
    def on_pair(self, left: Any, right: Any, finding: Finding | None) -> DupView:
        """The two photos compared, picked in their menus."""
        g = finding.group if finding else None
        if g is None or g.member(left) is None or g.member(right) is None:
            return DupView()
        view = self._pair(g, int(left), int(right))
        view.pair = SKIP  # the user just set the menus
        return view

    @_guarded("comparing")
    def on_member(self, index: int, left: Any, finding: Finding | None) -> DupView:
        """A member clicked: it is compared with the left photo (with another one when it is the left one)."""
        g = finding.group if finding else None
        if g is None or not 0 <= int(index) < len(g.members):
            return DupView()
        right = g.members[int(index)].id
        left = g.member(left).id if g.member(left) else g.keeper
        if left == right:
            left = g.others(right)[0].id
        return self._pair(g, left, right)

    def _pair(self, g: DupGroup, left: int, right: int) -> DupView:
        a, b = g.member(left), g.member(right)
        previews = (str(self.ctx.thumbs.preview(a.abs_path).path), str(self.ctx.thumbs.preview(b.abs_path).path))
        return DupView(pair=(member_choices(g), left, right), compare=previews, facts=facts_md(a, b))

    def _group_items(self, finding: Finding) -> list[tuple[str, str]]:
        shown = finding.groups[:SHOWN_GROUPS]
        return [(self._thumb(g.member(g.keeper)), group_caption(n, g)) for n, g in enumerate(shown, 1)]

    def _thumb(self, m: DupMember) -> str:
        return str(self.ctx.thumbs.thumb(m.abs_path).path)

    # -- clean-up and undo ---------------------------------------------------------------------------
    @_guarded("cleaning up")
    def on_ask(self, keep: Any, finding: Finding | None) -> DupView:
        """"Keep this one": the question before anything moves."""
        g, kept = _chosen(keep, finding)
        trash = self._clean_check(finding.collection, g.others(kept.id))
        names = ", ".join(md_escape(m.name) for m in g.others(kept.id))
        return DupView(confirm=f"Keep **{md_escape(kept.name)}** and move {len(g.members) - 1} other photo"
                               f"{'s' if len(g.members) > 2 else ''} ({names}) to {md_escape(trash)}? "
                               "Nothing is deleted; *Undo the last clean-up* puts them back.")

    @_guarded("cleaning up")
    def on_clean(self, keep: Any, finding: Finding | None) -> DupView:
        """Confirmed: keep one, move the others to the trash; the group leaves the list."""
        g, kept = _chosen(keep, finding)
        with self._exclusive():
            trash = self._clean_check(finding.collection, g.others(kept.id))
            done = clean_groups(self.ctx.config, finding.collection, [(kept.id, [m.id for m in g.members])])
        finding.groups.remove(g)
        view = self.on_group(min(finding.selected, len(finding.groups) - 1), finding) if finding.groups else \
            DupView(**dict(CLEARED, finding=finding))
        view.status = moved_md(done.moves, str(trash), done.summary_line)
        view.groups = self._group_items(finding)
        return view

    def on_cancel(self) -> DupView:
        return DupView(confirm=None, status="Nothing was moved.")

    @_guarded("undoing the clean-up")
    def on_undo(self, collection: str | None) -> DupView:
        """Put the photos of the last clean-up of ``collection`` back, and add them to it again."""
        name = self.ctx.existing(collection)
        with self._exclusive():
            self._clean_check(name, [])
            batch = last_batch(self.ctx.config, name)
            if batch is None:
                return DupView(status=f"Nothing to undo: no photo of {md_escape(name)} is in its trash folder.")
            info = self.ctx.info(name)
            embedder = self.ctx.service.embedder if info and info.model == self.ctx.running_model else None
            done = undo_clean(self.ctx.config, name, embedder=embedder, batch=batch or None)
        return DupView(status=restored_md(done.moves, done.summary_line), **CLEARED)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise AppError("Duplicates are being found or cleaned up; wait for it to finish.")
        try:
            yield
        finally:
            self._busy.release()

    def clean_off(self, name: str, root: Path) -> str:
        """Why clean-up is off for the collection ``name`` with its folder ``root`` ("" when it is allowed)."""
        try:
            self._root_check(name, root)
        except LibraryRootError as exc:
            return exc.user_message()
        return ""

    def _root_check(self, name: str, root: Path) -> None:
        if not self.roots:
            raise LibraryRootError("Moving duplicates to the trash from the app is off.",
                                   hint="Start the app with --library-root DIR (a folder holding the collection's).")
        try:
            library_path(self.roots, str(root), must_be_dir=True)
        except LibraryRootError:
            raise LibraryRootError(f"{name}'s folder {root} is not under a library root: its photos are not moved "
                                   "from the app.", hint="Use python -m app.cli duplicates --clean.") from None

    def _clean_check(self, name: str, members: list[DupMember]) -> Path:
        """The trash folder of ``name``, after checking that its folder and ``members``' files are under a
        library root and that the members are still the collection's items they were when found."""
        state = read_state(self.ctx.config, name)
        root = Path(state.table.image_root)
        self._root_check(name, root)
        live = state.table.live_paths()
        for m in members:
            if live.get(m.file) != m.id:
                raise AppError(f"{m.file} is no longer item {m.id} of {name}.", hint="Find the duplicates again.")
            library_path(self.roots, m.abs_path)
        return trash_dir(root, name)


def _checked(tier: str | None, strictness: str | None) -> tuple[str, str]:
    tier, strictness = tier or ALL_TIERS, strictness or "default"
    if tier not in TIER_CHOICES:
        raise DatasetError(f"Unknown tier {tier!r}.", hint=f"Use one of: {', '.join(TIER_CHOICES)}.")
    if strictness not in STRICTNESS:
        raise DatasetError(f"Unknown strictness {strictness!r}.", hint=f"Use one of: {', '.join(STRICTNESS)}.")
    return tier, strictness


def _chosen(keep: Any, finding: Finding | None) -> tuple[DupGroup, DupMember]:
    g = finding.group if finding else None
    if g is None:
        raise AppError("Find duplicates and click a group first.")
    kept = g.member(keep)
    if kept is None:
        raise AppError("Choose the photo to keep.")
    return g, kept


def finding_of(report: DuplicateReport, root: Path, tier: str, strictness: str) -> Finding:
    """``report``'s groups as the tab holds them: each member with its file (under ``root``) and facts."""
    groups = []
    for g in report.groups:
        members = []
        for i in g.members:
            f = report.facts.get(i, {})
            members.append(DupMember(int(i), report.paths[i], str(root / report.paths[i]), int(f.get("width") or 0),
                                     int(f.get("height") or 0), f.get("bytes"), f.get("mtime_ns")))
        groups.append(DupGroup(g.tier, float(g.score), int(g.keeper), tuple(members)))
    return Finding(report.collection, tier, strictness, groups)
