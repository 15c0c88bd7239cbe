"""Layer 6, metrics: measuring the product. Pure retrieval metrics (mAP@10, mHR@10, P@5), the
leave-one-out evaluation of a collection and its index, and the speed benchmark.

Import from the modules themselves (``from app.metrics.MODULE import NAME``): this package re-exports
nothing, so importing one of its modules never loads the others.
"""
