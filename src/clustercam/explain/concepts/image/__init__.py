"""Concepts of one image (per-image level): channel clustering, importance, maps, metrics,
fidelity and ground-truth scores, and :func:`run_concepts` over a batch of images."""
