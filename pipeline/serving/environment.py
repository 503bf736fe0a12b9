"""The Python environment the model server runs in: PyTriton and NumPy < 2 in front of the project's own.

PyTriton 0.7.0 ships Triton 2.51, whose Python backend stub was built with pybind11 2.10: under NumPy 2 every
response it builds is empty (`raw_output_contents: ""`, the client fails with "cannot reshape array of size
0"; triton-inference-server/python_backend#384 fixed it in a later Triton). PyTriton therefore pins
`numpy<2`, while pyarrow here needs NumPy >= 2 (it refuses to import under 1.26), so the two cannot share
one environment: `pip install nvidia-pytriton` into the project's environment breaks Spark's Arrow path.

So the server runs in an environment of its own, made once from this interpreter: a venv without pip whose
site-packages hold `nvidia-pytriton` and `numpy<2` (installed with this interpreter's pip from the package
index), followed by this environment's site-packages (a `.pth` line), so torch, torchvision and this project
come from here. The stub the Triton server starts runs in the server's interpreter (PyTriton puts
`sys.exec_prefix/bin` first on its PATH), so it gets NumPy 1.26 too. Made under an exclusive `flock`, in a
temporary directory renamed into place: whole or absent. A run that finds another making it waits at most
`MAKE_WAIT_S`, then fails naming the lock file and its holder (`pipeline.runtime.locks`).

Where (`root`): `topology.server_env`, else the driver's cache (~/.cache/spark-inference-bench/server-env) for
the clusters the harness starts here, and `<storage root>/server-env` for cluster=remote, whose nodes see the
storage root but not this machine's cache. The driver makes it (it needs the package index, which a cluster's
nodes may not reach); the nodes run it, so they need this interpreter and these site-packages at the same paths
(one image for the driver and the nodes, as the namespace cluster of the tests has).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from pipeline.runtime.locks import bounded_lock

log = logging.getLogger(__name__)

PYTRITON = "nvidia-pytriton==0.7.0"
NUMPY = "numpy<2"
MAIN_PTH = "zz_spark_inference_bench.pth"  # sorted last: this environment's packages come after its own
MAKE_WAIT_S = 1800.0  # the longest a run waits for another run making the environment (pip: minutes, not half an hour)


class ServerEnvironmentError(RuntimeError):
    """The server's environment could not be made (pip failed, no package index)."""


LOCAL_ROOT = "~/.cache/spark-inference-bench/server-env"
NODES_ROOT = "server-env"  # under the storage root, for cluster=remote


def root(config: Any) -> Path:
    """Where the server environment of a run is made (module docstring)."""
    from pipeline.config.schema import ClusterMode
    from pipeline.data.storage import local_path

    configured = getattr(config.topology, "server_env", None)
    if configured:
        return Path(configured).expanduser().resolve()
    if config.cluster.mode is ClusterMode.remote and config.storage:
        return local_path(config.storage) / NODES_ROOT
    return Path(LOCAL_ROOT).expanduser()


def name() -> str:
    """The environment's directory name: this Python's version, the pinned packages and which environment's
    site-packages it extends. An environment made from another venv (a CI clone since deleted) names site-packages
    that are gone or hold another checkout: its server would fail with `No module named 'pipeline'`, so each
    driver environment gets its own."""
    extends = hashlib.sha256("\n".join(site.getsitepackages()).encode()).hexdigest()[:10]
    return f"py{sys.version_info.major}{sys.version_info.minor}-pytriton0.7.0-numpy1-{extends}"


def python(root: Path) -> Path:
    return root / name() / "bin" / "python"


def libpython_dir() -> str:
    """Where this interpreter's own libpython is: Triton's Python stub must load it, not the system's
    (a system libpython 3.11.2 against this 3.11.7 standard library fails with `'_thread.RLock' object has
    no attribute '_recursion_count'`), so it goes first on the server's LD_LIBRARY_PATH."""
    return str(sysconfig.get_config_var("LIBDIR"))


def ensure(root: str | Path) -> Path:
    """The server environment's interpreter under `root`, made first if it is missing (minutes, once)."""
    root = Path(root).expanduser()
    target = root / name()
    interpreter = target / "bin" / "python"
    if interpreter.exists():
        return interpreter
    root.mkdir(parents=True, exist_ok=True)
    with bounded_lock(root / f"{name()}.lock", MAKE_WAIT_S, f"making the model server's environment {target}"):
        if interpreter.exists():  # another run made it while this one waited
            return interpreter
        staging = root / f"{name()}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        started = time.perf_counter()
        log.info("making the model server's environment %s (%s, %s): once, a few minutes", target, PYTRITON, NUMPY)
        try:
            _make(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.replace(staging, target)
        log.info("model server environment ready in %.0f s", time.perf_counter() - started)
    return interpreter


def _make(staging: Path) -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(staging)], check=True, capture_output=True)
    purelib = subprocess.run(
        [str(staging / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-conflicts", "--target", purelib]
    result = subprocess.run([*pip, PYTRITON, NUMPY], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServerEnvironmentError(
            f"could not install {PYTRITON} and {NUMPY} for the model server into {staging}: "
            f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}"
        )
    lines = [f"import site; site.addsitedir({path!r})" for path in site.getsitepackages()]
    Path(purelib, MAIN_PTH).write_text("\n".join(lines) + "\n")
