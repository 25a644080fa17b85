"""Benchmark: `score --engine ray` on 1, 2 and 3 simulated nodes, photos per second side by side (issue 21).

Each cluster is `ray.cluster_utils.Cluster` (what Ray's own tests use): a head without CPUs and
N worker nodes of `--cpus-per-node` CPUs, every one a raylet of its own on 127.0.0.1 of this
machine. The driver (this process) joins it by address, as `--ray-address` does, and runs the job
(decode tasks, the autoscaling actor pool, Parquet parts written by the driver). Two rates: over
the whole job, and once running (from the first scored photo to the last: without the start of
the worker processes and of the actors loading the backbone, which is a fixed cost per job). The
simulated nodes share this machine's cores: the figures show how the engine spreads the work
over nodes, not what real machines would add.

    python -m benchmarks.ray_cluster [--photos 96] [--nodes 1 2 3] [--backbone test-tiny-rn]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.ray_overhead import make_photos
from iqa.engine.ray_engine import LOCAL_ONLY_VARIABLE, RayJob, cluster_plan, connect, import_ray, run_job
from iqa.methods.scoring import ScorerSpec


@dataclass
class Run:
    nodes: int
    seconds: float  # the whole job
    running: float  # from the first result block to the last
    first: int  # rows in the first block (not counted in the running rate)
    decoded_on: int
    plan: str


def run_on_cluster(nodes: int, cpus: int, spec: ScorerSpec, folder: Path, dest: Path) -> Run:
    """The job on a new cluster of `nodes` workers, shut down after."""
    os.environ.setdefault(LOCAL_ONLY_VARIABLE, "0")  # before Ray is imported: nodes on 127.0.0.1
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=node_args(0))
    try:
        for _ in range(nodes):
            cluster.add_node(**node_args(cpus))
        cluster.wait_for_nodes()
        connect(cluster.address)  # held across the job, whose plan is read from it
        ray = import_ray()
        arrivals: list[tuple[float, int]] = []
        try:
            plan = cluster_plan(ray)
            job = RayJob([str(folder)], str(dest), spec, cluster.address)
            job.on_rows = lambda rows: arrivals.append((time.perf_counter(), rows))
            start = time.perf_counter()
            summary = run_job(job)
            seconds = time.perf_counter() - start
        finally:
            ray.shutdown()
        assert not summary.errors and pq.read_table(dest).num_rows == summary.scored
        running = arrivals[-1][0] - arrivals[0][0]
        pool = f"{plan.actors} actor{'s' if plan.actors > 1 else ''} at most, {plan.decode_tasks} decode slots"
        return Run(nodes, seconds, running, arrivals[0][1], summary.nodes, pool)
    finally:
        cluster.shutdown()


def node_args(cpus: int) -> dict[str, Any]:
    return {"num_cpus": cpus, "node_ip_address": "127.0.0.1", "object_store_memory": 200 * 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--backbone", default="test-tiny-rn")
    args = parser.parse_args()
    spec = ScorerSpec(backbone=args.backbone, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        make_photos(folder, args.photos)
        runs = [run_on_cluster(n, args.cpus_per_node, spec, folder, Path(tmp) / f"out-{n}") for n in args.nodes]
    print(
        f"{args.photos} JPEGs of 1024x768, CLIP-IQA on {args.backbone} (CPU); simulated nodes of "
        f"{args.cpus_per_node} CPU each on one machine of {os.cpu_count()} cores (ray.cluster_utils.Cluster)"
    )
    print(f"{'nodes':>5}{'job s':>8}{'photos/s':>10}{'running s':>11}{'photos/s':>10}{'decoded on':>12}  pool")
    for run in runs:
        rate = (args.photos - run.first) / run.running if run.running else float("nan")
        print(
            f"{run.nodes:>5}{run.seconds:8.1f}{args.photos / run.seconds:10.2f}{run.running:11.1f}{rate:10.2f}"
            f"{run.decoded_on:>12}  {run.plan}"
        )


if __name__ == "__main__":
    main()
