"""Reproducing both papers from run folders: records and model selection, tables, figures.

``clustercam.reproduce`` (the CLI) runs the sweeps; everything here reads finished run
folders (the outputs contract), so a sweep can be re-aggregated without re-running it.
"""
