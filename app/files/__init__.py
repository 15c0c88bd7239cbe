"""Layer 1, files: writing files atomically (temp file in the same folder, fsync, rename), file
checksums, and the exclusive lock that lets one change to a collection run at a time."""

from app.files.atomic import atomic_writer, fsync_dir, write_bytes, write_json, write_npy
from app.files.digest import file_sha256
from app.files.lock import exclusive_lock

__all__ = [
    "atomic_writer",
    "exclusive_lock",
    "file_sha256",
    "fsync_dir",
    "write_bytes",
    "write_json",
    "write_npy",
]
