"""Gradio's own per-event cost on this machine: the floor under every click in the app.

A minimal Blocks app with the same two outputs a search updates (a gallery of k thumbnails and a
status line) and no work in its handler: clicking a gallery item sends one event, and the answer
is the same gallery rotated by one. ``scripts/bench_ui.py`` starts it beside the app
(``python -m app.metrics.gradio_floor --port N --images DIR``) and times a click to the gallery
rendered exactly as it times the app, so ``click_result - floor`` is what the app itself adds.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

import gradio as gr  # at module level: Gradio finds the gr.SelectData parameter by its annotation


def build_floor_app(images: list[str], k: int = 5):
    """The minimal app: gallery ``#results`` and status ``#status``, with the markup the benchmark waits for."""
    def status(seq: int, top: str) -> str:
        return f'<div class="ris-status" data-seq="{seq}" data-top="{html.escape(top, quote=True)}">#{seq}</div>'

    def shown(start: int) -> list[tuple[str, str]]:
        return [(images[(start + i) % len(images)], f"item {(start + i) % len(images)}") for i in range(k)]

    def on_select(evt: gr.SelectData, seq: int):
        seq += 1
        items = shown(seq)
        return gr.Gallery(value=items, selected_index=None), status(seq, items[0][1]), seq

    with gr.Blocks(analytics_enabled=False) as demo:
        state = gr.State(0)
        first = shown(0)
        gallery = gr.Gallery(value=first, columns=5, height="auto", allow_preview=False, object_fit="cover",
                             elem_id="results", interactive=False, buttons=[])
        line = gr.HTML(status(0, first[0][1]), elem_id="status")
        gallery.select(on_select, [state], [gallery, line, state], api_visibility="private",
                       show_progress_on=[gallery])
    demo.queue(default_concurrency_limit=1)
    return demo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--images", required=True, help="a folder of JPEG thumbnails to show")
    args = p.parse_args(argv)
    images = sorted(str(f) for f in Path(args.images).glob("*.jpg"))
    gr.set_static_paths([args.images])  # served as the app serves its thumbnails: no copy per event
    build_floor_app(images).launch(server_name="127.0.0.1", server_port=args.port, show_error=False, ssr_mode=False,
                                   footer_links=[], quiet=True, mcp_server=False, pwa=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
