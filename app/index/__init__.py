"""Layer 4, index: nearest-neighbour indexes behind one interface, :class:`VectorStore`.

The faiss store (an index file plus its checked manifest; training, PCA, search parameters), in-place
updates of a built faiss index and the rule that says when to retrain it, the Milvus store (a server
or Milvus Lite), the tuner that picks the smallest faiss IVFPQ configuration reaching a recall target
after exact re-scoring of its top R candidates, and that re-scoring.

Import from the modules themselves (``from app.index.MODULE import NAME``): this package re-exports
nothing, so importing one of its modules never loads the others.
"""
