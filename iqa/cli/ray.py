"""`score --engine ray`: the options checked, the Ray job run (`iqa.engine.ray_engine`), its summary printed."""

from __future__ import annotations

import argparse
import math
import sys

from iqa.cli.options import scorer_spec
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING, is_test_backbone
from iqa.engine.ray_engine import DEFAULT_STALL_TIMEOUT, RayJob, import_ray, run_job
from iqa.errors import UsageError


def run_ray(args: argparse.Namespace) -> int:
    """`score --engine ray`: the job, then a summary; every unusable photo named on stderr."""
    import_ray()  # before anything else: without Ray, one line saying how to install it
    if not args.out:
        raise UsageError("--engine ray writes Parquet files: give --out DEST (a folder or an object-store URI)")
    if args.csv or args.json:
        raise UsageError("--engine ray writes Parquet only (--out); --csv and --json are for the local engine")
    stall_timeout = DEFAULT_STALL_TIMEOUT if args.stall_timeout is None else args.stall_timeout
    if not 0 < stall_timeout < math.inf:
        raise UsageError(f"--stall-timeout must be a positive number of seconds, not {stall_timeout:g}")
    if is_test_backbone(args.backbone):
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    job = RayJob(
        list(args.paths),
        args.out,
        scorer_spec(args),
        args.ray_address,
        recursive=args.recursive,
        stall_timeout=stall_timeout,
    )
    summary = run_job(job)
    for path, reason in summary.errors:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    already = f", {summary.already} already in {args.out}" if summary.already else ""
    where = f"; decoded on {summary.nodes} node{'s' if summary.nodes != 1 else ''}" if summary.nodes else ""
    unusable = len(summary.errors)
    print(f"scored {summary.scored} photos, {unusable} unusable{already}{where}; Parquet files in {args.out}")
    return 1 if summary.errors else 0
