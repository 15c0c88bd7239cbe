"""What the page gives the browser besides its components: the CSS, the page's JavaScript, the script that
loads an image into the crop editor, and the theme. :mod:`app.web.server` passes them to Gradio."""

from __future__ import annotations

import gradio as gr

CSS = """
#ris-header h1 { margin: 0; font-size: 1.45rem; }
#ris-header p { margin: 0.15rem 0 0; opacity: 0.75; }
#ris-notice { border-left: 4px solid var(--color-accent); padding: 0.35rem 0.75rem;
  background: var(--block-background-fill); border-radius: var(--radius-md); }
#ris-notice p { margin: 0; }
.ris-status { font-size: 0.82rem; opacity: 0.8; padding: 0.1rem 0.25rem; line-height: 1.5; }
.ris-status span { white-space: nowrap; }
#ris-message p { margin: 0.25rem 0; }
#ris-message pre { white-space: pre-wrap; word-break: break-all; }
#ris-message:empty { display: none; }
/* The crop editor is not a paint program: only the image tools (crop) are shown. */
#crop-editor button[aria-label="Brush"], #crop-editor button[aria-label="Erase"],
#crop-editor button[aria-label="Color"], #crop-editor button[aria-label="Brush Size"] { display: none !important; }
/* Galleries take the height of their rows (Gradio's default is a fixed, scrolling box). */
#results .grid-wrap, #examples .grid-wrap, #history .grid-wrap { min-height: 0; max-height: none; overflow-y: visible; }
#results .grid-wrap { min-height: 190px; padding-top: 2.4rem; }
#history .grid-wrap { padding-top: 2.4rem; }
/* Captions: a full-width strip under each thumbnail, wrapped rather than cut. */
#results .caption-label, #examples .caption-label, #history .caption-label {
  left: 0; right: 0; bottom: 0; max-width: 100%; border: none; border-radius: 0; white-space: normal;
  opacity: 0.9; font-size: 0.72rem; line-height: 1.3; padding: 2px 6px; }
#results .thumbnail-lg:hover .caption-label, #examples .thumbnail-lg:hover .caption-label { opacity: 1; }
/* The Duplicates tab's galleries: as tall as their rows, captions wrapped. */
#dup-groups .grid-wrap, #dup-members .grid-wrap { min-height: 0; max-height: none; overflow-y: visible; padding-top: 2.4rem; }
#dup-groups .caption-label, #dup-members .caption-label {
  left: 0; right: 0; bottom: 0; max-width: 100%; border: none; border-radius: 0; white-space: normal;
  opacity: 0.9; font-size: 0.72rem; line-height: 1.3; padding: 2px 6px; }
#compare.block { border: 1px solid var(--border-color-primary) !important; }
.ris-hint p { font-size: 0.8rem; opacity: 0.7; margin: 0; }
.ris-error { color: var(--error-text-color, #b91c1c); font-size: 0.9rem; padding: 0.25rem 0; }
"""


# The query image silently ignores files the browser cannot decode; say so instead (the server never sees them).
JS = """
() => {
  const box = () => document.getElementById("ris-client-error");
  const say = (text) => { const el = box(); if (el) { el.textContent = text; el.hidden = !text; } };
  const check = async (file) => {
    if (!file) return;
    try { const bmp = await createImageBitmap(file); bmp.close(); say(""); }
    catch (err) {
      say(`⚠️ "${file.name}" is not an image this browser can open. Use a JPEG, PNG, GIF, WebP or BMP file.`);
    }
  };
  document.addEventListener("change", (e) => {
    const t = e.target;
    if (t instanceof HTMLInputElement && t.type === "file" && t.closest("#query")) check(t.files && t.files[0]);
  }, true);
  document.addEventListener("drop", (e) => {
    const t = e.target;
    if (t instanceof Element && t.closest("#query")) check(e.dataTransfer && e.dataTransfer.files[0]);
  }, true);
}
"""


# The image the crop editor opens on is loaded by the browser as if the user had picked the file: the
# crop editor can crop an upload, but not an image set from the server (Gradio 6.31 then keeps sending the
# uncropped image). The crop editor's box has just been shown: wait (bounded) for its file input.
LOAD_INTO_CROP_EDITOR = """
async (src) => {
  if (!src) return [];
  const url = src.split("#")[0];
  const ready = () => document.querySelector("#crop-editor .pixi-target canvas")
    && document.querySelector("#crop-editor input[type=file]");
  for (let i = 0; i < 100 && !ready(); i++) await new Promise(r => setTimeout(r, 100));
  const input = document.querySelector("#crop-editor input[type=file]");
  if (!input) return [];
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok) return [];
  const blob = await res.blob();
  const name = decodeURIComponent(url.split("/").pop() || "image.png");
  const files = new DataTransfer();
  files.items.add(new File([blob], name, { type: blob.type || "image/png" }));
  input.files = files.files;
  input.dispatchEvent(new Event("change", { bubbles: true }));
  return [];
}
"""


def theme() -> gr.themes.Base:
    """Gradio's Soft theme, which has light and dark variants: the browser's preference picks one (no mode is
    forced)."""
    return gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")
