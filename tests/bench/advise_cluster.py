"""Calibrate, advise and verify on the namespace cluster, end to end: `python -m tests.bench.advise_cluster`.

    python -m tests.bench.advise_cluster --out /tmp/advise-cluster
    python -m tests.bench.advise_cluster --out /tmp/advise-cluster --images-per-s 50 --verify 1 -- repeats=3

What a user of a cluster of other machines runs (docs/advice.md), on a namespace cluster (`tests.helpers.nscluster`)
of `--nodes` worker nodes, each with 1 core, 1 emulated GPU and the tool installed, and one storage directory
under `--out`:
1. `python -m pipeline sweep=calibrate cluster=remote cluster.master=... storage=... model=accelerator
   device.images_per_s=N` (a simulated device on the emulated GPUs; the arguments after `--` are added), which
   writes `--out/calibrate/rates.json`;
2. `python -m reports advise --rates FILE --top K --verify K`: the ranked picks, then the top K run as jobs with the
   rates file's overrides (`pipeline.projection.calibrate.KEPT_OVERRIDES`: the cluster's master, workers and
   storage, the model and device), so on the same cluster, each printed as predicted against measured.
Each command is bounded (`--timeout`: SIGTERM to its process group, which the tool passes on to what it started,
then SIGKILL); the cluster is stopped by PID and its namespaces removed however the commands end. Nothing is
asserted: the load average and `uptime` are printed before and after, as every node shares this machine's cores.
Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.projection.calibrate import write
from tests.helpers.nscluster import namespace_cluster

STOP_GRACE_S = 60.0
ROOT = Path(__file__).resolve().parents[2]  # the commands run here, so they import this checkout's tool


def uptime() -> str:
    """`uptime`'s line (the load average of the shared machine), or the load average where `uptime` is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average {os.getloadavg()}"


def bounded(command: Sequence[str], timeout_s: float, cwd: Path) -> int:
    """Run `command` in its own process group, its output on ours; after `timeout_s` SIGTERM the group (the tool
    stops what it started), after STOP_GRACE_S more SIGKILL it. Its exit status (-signal when killed)."""
    print("$ " + " ".join(command), flush=True)
    process = subprocess.Popen(list(command), cwd=cwd, process_group=0)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"stopping after {timeout_s:.0f} s (--timeout)", flush=True)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait(timeout=STOP_GRACE_S)
    except BaseException:  # Ctrl-C: stop the command before the cluster goes
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_GRACE_S)
        raise


def calibrate_command(master_url: str, nodes: int, storage: Path, out: Path, images_per_s: float) -> list[str]:
    """`sweep=calibrate` on the namespace cluster, with the simulated device at `images_per_s` on each node's GPU."""
    return [
        sys.executable,
        "-m",
        "pipeline",
        "sweep=calibrate",
        f"hydra.sweep.dir={out / 'calibrate'}",
        "cluster=remote",
        f"cluster.master={master_url}",
        f"cluster.workers={nodes}",
        "cluster.worker_cores=1",
        "cluster.executor_memory=1g",
        "cluster.register_timeout_s=300",
        f"storage={storage}",
        "gpu.emulate=1",
        "model=accelerator",
        f"device.images_per_s={images_per_s:g}",
    ]


def advise_command(rates: Path, out: Path, verify: int, images: int, timeout_s: float) -> list[str]:
    """The advice from the rates file, its top `verify` picks run on the cluster the calibration ran on."""
    return [
        sys.executable,
        "-m",
        "reports",
        "advise",
        "--rates",
        str(rates),
        "--top",
        str(max(verify, 1)),
        "--verify",
        str(verify),
        "--verify-dir",
        str(out / "verify"),
        "--verify-images",
        str(images),
        "--verify-timeout",
        f"{timeout_s:g}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.advise_cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the cluster, its storage, the runs and rates go here")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--images-per-s", type=float, default=10.0, help="the simulated device's rate (default 10)")
    parser.add_argument("--verify", type=int, default=2, help="picks to run and compare (default 2)")
    parser.add_argument("--verify-images", type=int, default=64, help="images each verify run measures (default 64)")
    parser.add_argument("--timeout", type=float, default=3000.0, help="seconds each command may take (default 3000)")
    parser.add_argument("overrides", nargs="*", help="more overrides for the calibrate sweep (after --)")
    arguments = parser.parse_args()
    out = arguments.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(uptime(), f"({os.cpu_count()} CPUs)", flush=True)
    started = time.monotonic()
    codes = []
    with namespace_cluster(
        out / "cluster", workers=arguments.nodes, tool_on_nodes=True, gpus_per_worker=1, storage=out / "storage"
    ) as cluster:
        print(f"{arguments.nodes} nodes up in {time.monotonic() - started:.0f} s: {cluster.master_url}", flush=True)
        command = calibrate_command(cluster.master_url, arguments.nodes, cluster.storage, out, arguments.images_per_s)
        codes.append(bounded([*command, *arguments.overrides], arguments.timeout, ROOT))
        calibrated = time.monotonic()
        print(f"calibrated in {calibrated - started:.0f} s; {uptime()}", flush=True)
        rates = out / "calibrate" / "rates.json"
        if not rates.is_file() and any((out / "calibrate").glob("*/result.json")):
            # a sweep stopped before its end writes no rates file: one from the runs it finished, the rest assumed
            print(f"the sweep wrote no rates file; writing {rates} from the runs it finished", flush=True)
            write([out / "calibrate"], rates)
        if rates.is_file():
            command = advise_command(rates, out, arguments.verify, arguments.verify_images, arguments.timeout / 4)
            codes.append(bounded(command, arguments.timeout, ROOT))
        else:
            print(f"no rates file at {rates}: the calibrate sweep's output above says why", flush=True)
            codes.append(1)
        print(f"advised and verified in {time.monotonic() - calibrated:.0f} s; {uptime()}", flush=True)
    print(f"cluster stopped and removed; {time.monotonic() - started:.0f} s in all; {uptime()}", flush=True)
    return max(abs(code) for code in codes)


if __name__ == "__main__":
    sys.exit(main())
