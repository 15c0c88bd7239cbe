"""Layer 1, files: writing files atomically (temp file in the same folder, fsync, rename)."""

from app.files.atomic import atomic_writer, fsync_dir, write_bytes, write_json, write_npy

__all__ = [
    "atomic_writer",
    "fsync_dir",
    "write_bytes",
    "write_json",
    "write_npy",
]
