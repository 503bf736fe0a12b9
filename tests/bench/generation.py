"""Data generation on one machine: the driver's process pool against the cluster job on the namespace cluster.

    python -m tests.bench.generation --images 96 --workers 2 --rounds 2

Both make the same synthetic data set (`pipeline.data.datasets.generate_locally`, and
`pipeline.spark.generation.ClusterGeneration` on a namespace cluster of `--workers` nodes of 1 core each, which
share this machine's cores as the pool does), alternately, each round into a fresh cache so that nothing is found
cached: pool, cluster, pool, cluster, ... so both see the same load. Prints, per try, images/s of the generation
(the cluster job's own seconds, and with its application's start), CPU seconds per image, and the machine's load
average; then the medians. Needs root (namespaces); starts and stops everything it uses by PID.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.data.datasets import prepare
from pipeline.spark.generation import ClusterGeneration
from pipeline.spark.plan import plan
from tests.helpers.config import compose_config
from tests.helpers.nscluster import namespace_cluster


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.generation", description=__doc__)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--images-per-file", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"pool": [], "cluster": []}
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as scratch:
        root = Path(scratch)
        with namespace_cluster(root / "cluster", workers=arguments.workers, tool_on_nodes=True) as nodes:
            overrides = (
                "cluster=remote",
                f"cluster.master={nodes.master_url}",
                f"cluster.workers={arguments.workers}",
                "cluster.worker_cores=1",
                "cluster.executor_memory=1g",
                f"storage={nodes.storage}",
                f"dataset.num_images={arguments.images}",
                f"dataset.images_per_file={arguments.images_per_file}",
            )
            config = compose_config(*overrides)
            job = ClusterGeneration(config, plan(config))
            for number in range(arguments.rounds):
                for kind in ("pool", "cluster"):
                    cache = (nodes.storage if kind == "cluster" else root) / f"{kind}-{number}"
                    load = os.getloadavg()[0]
                    started = time.perf_counter()
                    made = prepare(config.dataset, cache, generate=job if kind == "cluster" else None)
                    whole = time.perf_counter() - started
                    record = made.generation
                    row = {
                        "images_per_s": record["images_per_s"],
                        "with_start": arguments.images / whole,
                        "cpu_s_per_image": record.get("cpu_s_per_image") or float("nan"),
                        "load": (load + os.getloadavg()[0]) / 2,
                    }
                    rows[kind].append(row)
                    nodes_seen = ", ".join(
                        f"{node} {each['images']} images {each['images_per_s']:.2f}/s"
                        for node, each in (record.get("nodes") or {}).items()
                    )
                    print(
                        f"round {number} {kind:7s}: {row['images_per_s']:.2f} images/s generating, "
                        f"{row['with_start']:.2f} with everything ({whole:.1f} s), "
                        f"{row['cpu_s_per_image'] * 1000:.0f} CPU ms/image, load {row['load']:.1f}"
                        + (f"; {nodes_seen}" if nodes_seen else ""),
                        flush=True,
                    )
    for kind, found in rows.items():
        print(
            f"{kind:7s} median: {statistics.median(r['images_per_s'] for r in found):.2f} images/s generating, "
            f"{statistics.median(r['with_start'] for r in found):.2f} with application start and manifest, "
            f"{statistics.median(r['cpu_s_per_image'] for r in found) * 1000:.0f} CPU ms/image; "
            f"load {statistics.median(r['load'] for r in found):.1f} on {os.cpu_count()} CPUs"
        )


if __name__ == "__main__":
    main()
