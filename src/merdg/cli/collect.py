"""``merdg collect``: the result tables of every finished run under a directory."""

from __future__ import annotations

import argparse

from merdg.cli.options import add_evaluation_options, evaluation_settings


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("collect", help="result tables from the records under a directory",
                       description="Read every finished run (records.jsonl + done) under DIR, "
                       "choose each task's hparam trial on source validation, and write "
                       "table.md (with the paired differences against the reference algorithm), "
                       "table.tex, cells.csv and results.csv (and robustness.md and "
                       "robustness.png for runs with --corruptions): the same tables `merdg "
                       "bench` and `merdg sweep` write, and prints every epoch-selection rule "
                       "side by side (as DomainBed's collect_results prints every selection "
                       "method). Runs holding several evaluations of one kind report those of "
                       "the evaluator options given here, else of DIR/experiment.json, else the "
                       "newest.")
    c.add_argument("dir", metavar="DIR",
                   help="a sweep or bench directory (searched recursively)")
    c.add_argument("--out", metavar="DIR", help="where to write the tables (default: DIR)")
    c.add_argument("--rule", default="source_val", choices=["source_val", "oracle", "last"],
                   help="epoch selection within each run for the tables written (the printed "
                   "comparison shows every rule side by side)")
    c.add_argument("--error", choices=["std", "se"],
                   help="what ± is: the sample std over seeds, or the standard error of the "
                   "mean, which DomainBed's tables report (default: the --error recorded in "
                   "DIR/experiment.json, else std)")
    c.add_argument("--reference", metavar="NAME",
                   help="algorithm of the paired-difference table (default: the one recorded "
                   "in DIR/experiment.json, else ERM)")
    add_evaluation_options(c)
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from merdg.evaluators import canonical_evaluations
    from merdg.experiments.report import write_tables

    chosen = evaluation_settings(args)
    evaluations = canonical_evaluations(chosen) if chosen else None
    result = write_tables(args.dir, args.out, args.rule, args.reference, evaluations,
                          args.error)
    print(result["markdown"])
    if result["console"]:
        print(result["console"])
    print("Every epoch-selection rule side by side (the files above: --rule "
          f"{args.rule}):\n\n{result['rules']}")
    print("tables: " + ", ".join(str(p) for p in result["paths"]))
    return 0
