"""The Duplicates tab's components (:class:`DuplicatesTab`), its outputs keyed by component
(:class:`DupOutputs`) and its events; its behaviour is :class:`app.web.duplicates.DuplicateHandlers`.

The collection, tier and strictness choices and Find (the search runs in its own thread; a ``gr.Timer``,
active only while it runs, polls it); the groups, largest first, one thumbnail each (the keeper's); the group
clicked, its members with the keeper marked; two of them side by side in an image slider with their size,
date and file size; "Keep it, move the others to the trash", with a confirmation, and "Undo the last
clean-up". Every event answers a dict keyed by the components its :class:`~app.web.duplicates_view.DupView`
sets (the rest stay as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
from gradio.blocks import Block

from app.service.duplicates import STRICTNESS
from app.web.duplicates import TIER_CHOICES, DuplicateHandlers
from app.web.duplicates_view import ALL_TIERS, DupView


@dataclass(frozen=True)
class DuplicatesTab:
    """The Duplicates tab's components; ``finding`` is the browser session's groups."""

    tab: gr.Tab
    collection: gr.Dropdown
    tier: gr.Radio
    strictness: gr.Radio
    find: gr.Button
    status: gr.Markdown
    timer: gr.Timer
    finding: gr.State
    groups: gr.Gallery
    members: gr.Gallery
    left: gr.Dropdown
    right: gr.Dropdown
    compare: gr.ImageSlider
    facts: gr.Markdown
    keep: gr.Dropdown
    clean: gr.Button
    confirm_box: gr.Group
    confirm_text: gr.Markdown
    confirm: gr.Button
    cancel: gr.Button
    undo: gr.Button


def duplicates_tab(dups: DuplicateHandlers) -> DuplicatesTab:
    """The tab and its components."""
    choices = dups.choices()
    with gr.Tab("Duplicates", elem_id="tab-duplicates") as tab:
        with gr.Row(equal_height=True):
            collection = gr.Dropdown(choices=choices, value=choices[0] if choices else None, label="Collection",
                                     scale=2, elem_id="dup-collection", filterable=False)
            tier = gr.Radio(list(TIER_CHOICES), value=ALL_TIERS, label="Tier", scale=3, elem_id="dup-tier",
                            info="exact: same pixels · edited: resized, cropped, recoloured… · shots: a burst")
            strictness = gr.Radio(list(STRICTNESS), value="default", label="Strictness", scale=2,
                                  elem_id="dup-strictness")
            find = gr.Button("Find duplicates", variant="primary", scale=1, elem_id="dup-find")
        gr.Markdown(dups.roots_md(), elem_id="dup-roots", elem_classes=["ris-hint"])
        status = gr.Markdown("", elem_id="dup-status")
        timer = gr.Timer(0.5, active=False)
        finding = gr.State(None)
        groups = gr.Gallery(label="Groups, largest first (click one to review it)", columns=8, height="auto",
                            fit_columns=False, allow_preview=False, object_fit="cover", elem_id="dup-groups", interactive=False,
                            buttons=[])
        members = gr.Gallery(label="The group's photos (★ the suggested keeper; click one to compare it)",
                             columns=6, height="auto", fit_columns=False, allow_preview=False, object_fit="contain",
                             elem_id="dup-members", interactive=False, buttons=[])
        with gr.Row(equal_height=True):
            left = gr.Dropdown(choices=[], label="Left", elem_id="dup-left", filterable=False)
            right = gr.Dropdown(choices=[], label="Right", elem_id="dup-right", filterable=False)
        with gr.Row():
            compare = gr.ImageSlider(show_label=False, type="filepath", max_height=360, elem_id="dup-compare",
                                     interactive=False, scale=3)
            with gr.Column(scale=2):
                facts = gr.Markdown("", elem_id="dup-facts")
        with gr.Row(equal_height=True, visible=bool(dups.roots)):
            keep = gr.Dropdown(choices=[], label="Keep", scale=3, elem_id="dup-keep", filterable=False)
            clean = gr.Button("Keep it, move the others to the trash", scale=2, elem_id="dup-clean")
            undo = gr.Button("Undo the last clean-up", scale=1, elem_id="dup-undo")
        with gr.Group(visible=False, elem_id="dup-confirm-box") as confirm_box:
            confirm_text = gr.Markdown("", elem_id="dup-confirm-text")
            with gr.Row():
                confirm = gr.Button("Yes, move them", variant="stop", elem_id="dup-confirm")
                cancel = gr.Button("No, move nothing", elem_id="dup-cancel")
    return DuplicatesTab(tab, collection, tier, strictness, find, status, timer, finding, groups, members, left, right,
                         compare, facts, keep, clean, confirm_box, confirm_text, confirm, cancel, undo)


class DupOutputs:
    """The components the tab's events update, and each :class:`DupView` field's."""

    def __init__(self, tab: DuplicatesTab) -> None:
        self.tab = tab
        t = tab
        self._targets: dict[str, Block] = {"status": t.status, "finding": t.finding, "groups": t.groups,
                                           "members": t.members, "compare": t.compare, "facts": t.facts,
                                           "keep": t.keep, "timer": t.timer}
        # Set with their field: the two menus (pair), the question and its box (confirm).
        self._components: list[Block] = [*self._targets.values(), t.left, t.right, t.confirm_box, t.confirm_text]

    @property
    def components(self) -> list[Block]:
        """Every component a Duplicates tab event may update: its outputs."""
        return list(self._components)

    def keyed(self, view: DupView) -> dict[Block, Any]:
        """``view``'s fields that are set, keyed by their components."""
        t, out = self.tab, {}
        for name, value in view.changed().items():
            if name == "pair":
                choices, left, right = value
                out[t.left], out[t.right] = gr.Dropdown(choices=choices, value=left), gr.Dropdown(choices=choices,
                                                                                                   value=right)
            elif name == "confirm":
                out[t.confirm_box] = gr.Group(visible=value is not None)
                out[t.confirm_text] = value or ""
            elif name == "keep":
                out[t.keep] = gr.Dropdown(choices=value[0], value=value[1])
            elif name in ("groups", "members"):
                out[self._targets[name]] = gr.Gallery(value=value, selected_index=None)
            elif name == "timer":
                out[t.timer] = gr.Timer(active=bool(value))
            else:
                out[self._targets[name]] = value
        return out

    def event(self, fn: Callable[..., DupView]) -> Callable[..., Any]:
        """A Gradio event function for a handler: its view keyed by component (a skip when it sets nothing)."""

        def event(*args: Any) -> Any:
            return self.keyed(fn(*args)) or gr.skip()

        event.__name__ = fn.__name__
        return event

    def selected(self, fn: Callable[..., DupView]) -> Callable[..., Any]:
        """Like :meth:`event`, for a gallery's ``select``: the handler gets the index of the clicked item."""

        def event(evt: gr.SelectData, *args: Any) -> Any:
            return self.keyed(fn(evt.index, *args)) or gr.skip()

        event.__name__ = fn.__name__
        return event


def wire_duplicates_tab(tab: DuplicatesTab, dups: DuplicateHandlers) -> None:
    """Its events: each answers a dict keyed by some of :attr:`DupOutputs.components`."""
    out = DupOutputs(tab)
    ev = dict(outputs=out.components, api_visibility="private", queue=False)
    t = tab

    def refresh_choices() -> dict[Any, Any]:
        return {t.collection: gr.Dropdown(choices=dups.choices())}

    t.tab.select(refresh_choices, None, [t.collection], api_visibility="private", queue=False)
    t.find.click(out.event(dups.start), [t.collection, t.tier, t.strictness], **ev)
    t.timer.tick(out.event(dups.poll), None, **dict(ev, show_progress="hidden"))
    t.groups.select(out.selected(dups.on_group), [t.finding], **ev)
    t.members.select(out.selected(dups.on_member), [t.left, t.finding], **ev)
    gr.on([t.left.input, t.right.input], out.event(dups.on_pair), [t.left, t.right, t.finding], **ev)
    t.clean.click(out.event(dups.on_ask), [t.keep, t.finding], **ev)
    t.confirm.click(out.event(dups.on_clean), [t.keep, t.finding], **ev)
    t.cancel.click(out.event(dups.on_cancel), None, **ev)
    t.undo.click(out.event(dups.on_undo), [t.collection], **ev)
