"""Run every benchmark and write ``benchmarks/RESULTS.md`` (``make bench``).

    python -m benchmarks.run_all [--quick] [--device cuda] [--only gradceam,concepts,training,clam,dcec,concepts_series,motifs,concept_settings,...]

``--quick`` writes ``benchmarks/.cache/RESULTS-quick.md`` instead (small sizes are a smoke
run, not results), unless ``--out`` says otherwise.

Each section is also saved to ``benchmarks/.cache/section-NAME.json``. On a shared machine,
``--only NAME --keep-others`` re-runs one benchmark (say, once the load is low again) and
writes the results file with the other sections as last measured; every section states
when and under which load it was measured. Where a section has no saved copy (a fresh
clone keeps none) it stops before running anything rather than drop that section.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from benchmarks import (
    bench_clam,
    bench_class_concepts,
    bench_concept_layers,
    bench_concept_run,
    bench_concept_settings,
    bench_concepts,
    bench_concepts_series,
    bench_dcec,
    bench_end_to_end,
    bench_fidelity,
    bench_gradceam,
    bench_motifs,
    bench_peers,
    bench_training,
)
from benchmarks.common import (
    CACHE,
    ROOT,
    CpuMeter,
    Headline,
    Section,
    check_device,
    headline_table,
    load_average,
    machine_info,
    machine_markdown,
    parser,
)

BENCHES = {
    "gradceam": bench_gradceam.run,
    "concepts": bench_concepts.run,
    "fidelity": bench_fidelity.run,
    "training": bench_training.run,
    "peers": bench_peers.run,
    "concept_run": bench_concept_run.run,
    "end_to_end": bench_end_to_end.run,
    "concept_settings": bench_concept_settings.run,
    "class_concepts": bench_class_concepts.run,
    "clam": bench_clam.run,
    "dcec": bench_dcec.run,
    "concept_layers": bench_concept_layers.run,
    "concepts_series": bench_concepts_series.run,
    "motifs": bench_motifs.run,
}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    p.add_argument("--keep-others", action="store_true",
                   help="fill the sections not run from their last saved results")
    args = p.parse_args()
    check_device(args.device)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}")
    out = Path(args.out) if args.out else (
        CACHE / "RESULTS-quick.md" if args.quick else ROOT / "benchmarks" / "RESULTS.md")
    suffix = "-quick" if args.quick else ""
    unsaved = [n for n in BENCHES if n not in names and not (CACHE / f"section-{n}{suffix}.json").is_file()]
    if args.keep_others and unsaved and out.is_file():  # checked before hours of benchmarks
        raise SystemExit(f"--keep-others: no saved results of {unsaved} under {CACHE}, so writing {out} "
                         "would drop their sections; run them too (--only), or write elsewhere (--out FILE) "
                         "and copy the new sections over by hand")
    t0, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    repeats = args.repeats
    sections, headlines, failed = [], [], []
    for name in BENCHES:
        saved = CACHE / f"section-{name}{suffix}.json"
        if name not in names:
            if args.keep_others and saved.is_file():
                section = Section.from_json(saved.read_text())
                sections.append(section.markdown())
                headlines += section.headlines
                print(f"[bench] {name}: kept from {section.date}", file=sys.stderr)
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        args.repeats = repeats  # each benchmark picks its own default when None
        try:
            section = BENCHES[name](args)
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others
            failed.append(name)
            err = traceback.format_exc()
            print(err, file=sys.stderr)
            sections.append(f"## {name}: FAILED\n\n```\n{err[-3000:]}\n```\n")
            headlines.append(Headline(f"{name}: the benchmark failed", "–", "–", False))
            continue
        sections.append(section.markdown())
        headlines += section.headlines
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(section.to_json())
        print(f"[bench] {name} done in {section.seconds:.0f} s", file=sys.stderr, flush=True)
    load1, others = load_average(), meter.others()
    info = machine_info(args.device)
    text = "\n".join([
        "# clustercam benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run_all"
        f"{' --quick' if args.quick else ''}{' --device ' + args.device if args.device != 'cpu' else ''}`"
        "). Benchmarks are not tests: they measure, they do not assert. Times are medians of "
        "repeated runs after warm-up, cases interleaved; ratios matter more than absolute "
        "times, which are shown too.",
        "",
        machine_markdown(info),
        f"- Load of this invocation ({', '.join(names)}): 1-minute load average {load0:.2f} at "
        f"the start (before the benchmark's own threads), {load1:.2f} at the end; other "
        f"processes kept {others:.2f} of the {info['cores']} cores busy on average (from "
        f"`/proc/stat` minus this run's own CPU time); it took {time.perf_counter() - t0:.0f} s."
        " Each section below states when and under which load it was measured. On a shared "
        "machine small-op code with 2 threads (k-means, OpenMP parallel regions) slows down "
        "far more than the load figure suggests.",
        "",
        headline_table(headlines),
        "",
        *sections,
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.rstrip() + "\n")
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
