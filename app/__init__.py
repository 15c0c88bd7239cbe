"""Local reverse image search. Layers, lowest first: files, net, core, index, service, metrics, then web and cli (see ARCHITECTURE.md)."""
