"""Layer 3, core: what an image becomes. The one image loader, the model registry (as data), weights,
preprocessing, the embedder (ONNX Runtime or PyTorch), datasets and the scan of messy folders, the
feature store and its versioned table, the plan of an incremental change, and the typed index
manifest. Nothing heavy happens at import: torch, timm and ONNX Runtime load on first use.

Import from the modules themselves (``from app.core.MODULE import NAME``): this package re-exports
nothing, so importing one of its modules never loads the others.
"""
