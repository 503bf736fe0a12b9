"""The scaling sweep on the namespace cluster, and its targets printed: `python -m tests.bench.scaling`.

    python -m tests.bench.scaling --nodes 3 --out /tmp/scaling             # 1, 2, 3 nodes, weak and strong
    python -m tests.bench.scaling --nodes 2 --out /tmp/scaling -- scaling.images_per_node=32 repeats=2

Starts a namespace cluster (`tests.helpers.nscluster`) of `--nodes` workers, each with 1 core and 1 emulated GPU,
the tool on them and one shared storage directory under `--out`, then runs `python -m pipeline sweep=scaling` on
it (`cluster.workers=1,...,N`, both modes; the arguments after `--` are added to its command line), and leaves the
sweep's results.csv and report.html in `--out/sweep`. The sweep's end prints each point (measured, ideal,
predicted, the nodes that ran tasks) and the targets (2 nodes / 1 node >= 1.8, predictions within 0.8-1.25x): not
asserted, as every node shares this machine's cores with whatever else runs on it (the load average is printed).
Needs root; the cluster is stopped by PID however the sweep ends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.nscluster import namespace_cluster


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.scaling", description=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="the cluster's storage and the sweep go here")
    parser.add_argument("overrides", nargs="*", help="more overrides for the sweep (after --)")
    arguments = parser.parse_args()
    out = arguments.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    started = time.monotonic()
    with namespace_cluster(
        out / "cluster", workers=arguments.nodes, tool_on_nodes=True, gpus_per_worker=1, storage=out / "storage"
    ) as cluster:
        print(f"{arguments.nodes} nodes up in {time.monotonic() - started:.0f} s: {cluster.master_url}", flush=True)
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            "sweep=scaling",
            f"hydra.sweep.dir={out / 'sweep'}",
            f"cluster.master={cluster.master_url}",
            f"cluster.workers={','.join(str(n) for n in range(1, arguments.nodes + 1))}",
            f"storage={cluster.storage}",
            f"cache_dir={out / 'cache'}",
            "cluster.register_timeout_s=300",
            *arguments.overrides,
        ]
        print(" ".join(command), flush=True)
        code = subprocess.run(command, cwd=out).returncode
    print(f"load average {os.getloadavg()} on {os.cpu_count()} CPUs; {time.monotonic() - started:.0f} s in all")
    return code


if __name__ == "__main__":
    sys.exit(main())
