"""Studies over finished run folders: the papers' reproduction, the explanation comparison and
the concept summary, with their shared records, tables and figures.

The entry points (``python -m clustercam.reproduce`` / ``compare`` / ``concept_summary``) run
the sweeps; everything here reads run folders through the outputs contract, so a sweep can be
re-aggregated without re-running it.
"""
