"""What `cluster.ship=code` and `cluster.ship=env` cost: bytes and seconds shipped, printed.

    python -m tests.bench.ship [--modes code,env] [--via classic,connect] [--workers 2] [--fresh] [--python PATH]

Starts a namespace cluster (`tests.helpers.nscluster`: nodes that lack the tool; needs root), then runs the tool
once per mode and way in (`spark://` to the master, `sc://` to a Connect server on the master's node): the null
model over 16 images, one timed pass, so what is printed is what shipping costs. Per run: the file shipped and its
bytes; the seconds to make it (`made`: zip or pack; `cached` when a previous run made it); the driver's seconds to
send it (`send`: for a classic env it goes with the application's start, in `startup`); the preflight's seconds
(the first task on every executor, in which Spark fetches and unpacks what was shipped, and a fresh Python imports
the tool); and each executor's seconds to get ready for its first task (`ready`: starting, fetching and unpacking
what was shipped, from the event log: `executor_ready_s`; classic only, a Connect server's log is its own).

The environment shipped is this interpreter's virtualenv (`--python` another's): gigabytes with a CUDA build of
torch. It is packed into the cache (`--fresh`: a temporary one, to time the pack) and each classic driver copies
and unpacks it too (Spark's `spark.archives`), each executor fetches and unpacks it: about (3 + 2 x executors)
times its size on this disk at the peak, checked before it starts. The nodes' /tmp is memory in a namespace
cluster: the executors' temporary files go to the shared storage directory instead (`java.io.tmpdir`, no fetch
cache), as on a machine whose /tmp is a disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.spark.shipping import environment_key
from tests.helpers.cli import result_of
from tests.helpers.config import compose_config
from tests.helpers.nscluster import namespace_cluster, unavailable
from tests.helpers.runs import ROOT

RUN = ("model=null_model", "dataset.num_images=16", "warmup=0", "repeats=1")


def _disk_conf(storage: Path) -> dict[str, str]:
    """Executors' temporary files (a fetched archive) on the storage disk rather than the nodes' memory /tmp."""
    tmp = storage / "executor-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {"spark.executor.extraJavaOptions": f"-Djava.io.tmpdir={tmp}", "spark.files.useFetchCache": "false"}


def _override(conf: dict[str, str]) -> str:
    return "+spark.conf={" + ", ".join(f'{key}: "{value}"' for key, value in conf.items()) + "}"


def run(
    python: str, master: str, workers: int, storage: Path, cache: Path, run_dir: Path, mode: str, conf: dict[str, str]
) -> tuple[dict[str, Any], float]:
    """One run of the tool with `cluster.ship=mode` against `master`: its result and wall seconds."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "SPARK_ENV_LOADED"}
    (run_dir.parent / "spark-conf").mkdir(parents=True, exist_ok=True)
    env["SPARK_CONF_DIR"] = str(run_dir.parent / "spark-conf")
    args = [
        "cluster=remote",
        f"cluster.master={master}",
        f"cluster.workers={workers}",
        "cluster.worker_cores=1",
        "cluster.executor_memory=1g",
        "cluster.preflight_timeout_s=1800",
        f"cluster.ship={mode}",
        f"storage={storage}",
        f"cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *RUN,
    ]
    if conf:
        args.append(_override(conf))
    started = time.monotonic()
    done = subprocess.run([python, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    result = result_of(run_dir)
    if result["status"] != "ok":
        raise SystemExit(f"{mode} via {master} failed: {result['error']}\n{done.stderr[-3000:]}")
    return result, time.monotonic() - started


def figures(result: dict[str, Any], mode: str) -> dict[str, Any]:
    """What a run's result says about what it shipped."""
    shipped, cluster = result["cluster"]["shipped"], result["cluster"]
    what = shipped["environment"] if mode == "env" else shipped["code"]
    preflight = shipped["preflight"]
    return {
        "file": what["file"],
        "bytes": what["bytes"],
        "made_s": what["made_s"],
        "cached": what["cached"],
        "send_s": what["seconds"] + (shipped["code"]["seconds"] if mode == "env" else 0.0),
        "startup_s": cluster["startup_s"],
        "preflight_s": preflight["seconds"],
        "ready_s": preflight.get("executor_ready_s"),
        "import_s": [executor["import_s"] for executor in preflight["executors"]],
        "pass_s": result["metrics"]["wall_s"],
    }


def _check_disk(python: str, where: Path, executors: int) -> None:
    """Refuse to start an env run this disk cannot hold (archive, the driver's copy and unpack, each executor's)."""
    prefix = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True).stdout
    size = sum(f.stat().st_size for f in Path(prefix.strip()).rglob("*") if f.is_file() and not f.is_symlink())
    need, free = (3 + 2 * executors) * size, shutil.disk_usage(where).free
    if need > free:
        raise SystemExit(
            f"cluster.ship=env of {prefix.strip()} ({size / 1e9:.1f} GB) needs ~{need / 1e9:.0f} GB free "
            f"on {where}, which has {free / 1e9:.0f} GB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="code,env")
    parser.add_argument("--via", default="classic,connect")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--python", default=sys.executable, help="the driver's interpreter (its venv is shipped)")
    parser.add_argument("--fresh", action="store_true", help="an empty cache: time the zip and the pack")
    parser.add_argument("--dir", default=None, help="where the cluster and runs go (default: a temporary dir)")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        raise SystemExit(f"namespace clusters cannot be made here: {reason}")
    modes, via = args.modes.split(","), args.via.split(",")
    directory = Path(args.dir or tempfile.mkdtemp(prefix="bench-ship-")).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    cache = directory / "cache" if args.fresh else Path(compose_config().cache_dir).expanduser()
    if "env" in modes:
        _check_disk(args.python, directory, args.workers)
    print(f"driver {args.python}; environment {environment_key(Path(sys.prefix))['python']}; cache {cache}")
    rows = []
    try:
        storage = directory / "storage"
        disk = _disk_conf(storage)
        connect_conf = {
            "spark.cores.max": str(args.workers),
            "spark.executor.cores": "1",
            "spark.executor.memory": "512m",
            **disk,
        }
        with namespace_cluster(
            directory / "cluster",
            workers=args.workers,
            cores=2,
            memory="3g",
            storage=storage,
            connect="connect" in via,
            connect_conf=connect_conf,
        ) as up:
            print(f"cluster: {up.timings}")
            for way in via:
                master = up.master_url if way == "classic" else up.connect_url
                for mode in modes:
                    run_dir = directory / "runs" / f"{way}-{mode}"
                    result, seconds = run(
                        args.python,
                        master,
                        args.workers,
                        storage,
                        cache,
                        run_dir,
                        mode,
                        disk if way == "classic" else {},
                    )
                    row = {"via": way, "mode": mode, "run_s": round(seconds, 1), **figures(result, mode)}
                    rows.append(row)
                    print(json.dumps(row))
    finally:
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    print()
    print(
        f"{'via':8} {'mode':5} {'bytes':>14} {'made s':>8} {'send s':>7} {'startup s':>9} {'preflight s':>11} "
        f"{'ready s (each executor)':>26}"
    )
    for row in rows:
        made = "cached" if row["cached"] else f"{row['made_s']:.1f}"
        ready = ", ".join(f"{v:.1f}" for v in (row["ready_s"] or {}).values()) or "-"
        print(
            f"{row['via']:8} {row['mode']:5} {row['bytes']:>14,} {made:>8} {row['send_s']:>7.2f} "
            f"{row['startup_s']:>9.1f} {row['preflight_s']:>11.1f} {ready:>26}"
        )


if __name__ == "__main__":
    main()
