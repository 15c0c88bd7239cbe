"""Layer 1, files: writing files atomically (temp file in the same folder, fsync, rename), file
checksums, and the exclusive lock that lets one change to a collection run at a time.

Import from the modules themselves (``from app.files.MODULE import NAME``): this package re-exports
nothing, so importing one of its modules never loads the others.
"""
