"""Layer 2, net: everything that talks to the network. The image-URL fetcher and its address policy
(SSRF-safe, timeouts, size cap), and the resumable, checksummed dataset and weights downloads.

Import from the modules themselves (``from app.net.MODULE import NAME``): this package re-exports
nothing, so importing one of its modules never loads the others.
"""
