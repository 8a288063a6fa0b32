"""``ltbench leaderboard SUITE``: run what a suite is missing, then render its board."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ltbench.errors import Interrupted, LTBenchError
from ltbench.leaderboard import render_suite
from ltbench.suite import Suite, parse_shard, run_suite


def main(argv: Optional[list[str]] = None) -> int:
    """``ltbench leaderboard SUITE.yaml``: run what is missing in the suite, then render its board
    (Markdown, CSV and HTML under the suite's output folder)."""
    parser = argparse.ArgumentParser(prog="ltbench leaderboard", description=main.__doc__)
    parser.add_argument("suite", help="suite file, e.g. benchmarks/default.yaml")
    parser.add_argument("--render-only", action="store_true", help="run nothing; render the records there are (e.g. to merge what several machines wrote)")
    parser.add_argument("--shard", metavar="I/N", help="run only every N-th run starting at the I-th (0-based), e.g. one shard per machine; the board shows all records found")
    args = parser.parse_args(argv)
    try:
        suite = Suite.load(args.suite)
        shard = parse_shard(args.shard)
        try:
            failures = [] if args.render_only else [r for r in run_suite(suite, shard=shard) if r[2]]
        except Interrupted:  # the board of the runs recorded so far, then the stop's line and status
            out = render_suite(suite)
            print(f"written (partial): {out['md']}, {out['csv']}, {out['html']}")
            raise
        out = render_suite(suite)
    except LTBenchError as e:
        print(f"ltbench: error: {e}", file=sys.stderr)
        return 2
    print(out["md"].read_text(encoding="utf-8"))
    print(f"written: {out['md']}, {out['csv']}, {out['html']}")
    if failures:
        print(f"{len(failures)} run(s) failed: " + "; ".join(f"{e.label} seed {s}: {m}" for e, s, m in failures), file=sys.stderr)
        return 1
    return 0
