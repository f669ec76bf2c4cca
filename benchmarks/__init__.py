"""clustercam benchmarks (not tests): ``make bench`` writes ``benchmarks/RESULTS.md``.

Each ``bench_*`` module runs alone (``python -m benchmarks.bench_gradceam [--quick]
[--device cuda]``) and prints its markdown section; ``python -m benchmarks.run_all`` runs
them all and writes the results file.
"""
