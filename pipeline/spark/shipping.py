"""What executors on other machines get from the driver before any pass, since they see nothing of its disk.

The model's weights: the driver's file (cached in `cache_dir`, or the user's `model.weights`) travels with the
application, `SparkContext.addFile` in a classic session and `addArtifacts(file=True)` under Spark Connect,
and a task opens its executor's copy through `SparkFile`, a path that resolves where it is opened. Chosen over
broadcast bytes (no broadcast under Connect; the state_dict would be unpickled in every Python worker, not
read from disk) and over a path on the storage root (a second copy of a cached file per run, and the cluster
fetches it per executor either way). Each executor fetches the file once, during the warm-up pass; what was
sent, its size and the seconds the driver spent are in the result (`cluster.shipped`).

The tool itself, by `cluster.ship` (cluster=remote; every other mode runs on this machine, `installed`):
- `installed`: nothing; the nodes have the tool and its dependencies.
- `code`: the packages the tasks import (`CODE_PACKAGES`, and a `model.factory`'s top-level package or module:
  `code_packages`; from where this process imports them) as one zip,
  `SparkContext.addPyFile` / `addArtifacts(pyfile=True)`, first on the Python workers' path; the nodes need the
  dependencies (the same Python minor version, torch, pyarrow, ...). Cached per content in `cache_dir/shipped/`.
- `env`: this process's virtualenv packed whole (`pack_environment`), unpacked by Spark into each executor's
  working directory as `environment/`, whose `bin/python` runs the Python workers (`spark.archives` and
  `spark.pyspark.python` when a classic application starts, `addArtifacts(archive=True)` and the session conf
  `spark.sql.execution.pyspark.python` under Connect, where it resolves in the session's directory, where the
  archive is unpacked: measured on pyspark 4.3), plus the code zip: a project installed editable packs as a
  hook pointing at this checkout, which the nodes cannot see, so the hook is left out and the code goes as for
  `code`. The archive is cached per environment (its distributions and versions, its Python, its path), so a
  sweep packs once. What the nodes need: the same OS and CPU architecture, and the interpreter the virtualenv
  was made from at the same path (`bin/python` is a link to it, pyvenv.cfg's `home`): a venv holds the
  packages, not Python itself.

What was shipped, its bytes, how, the seconds to make it (0 when cached, and `cached: true`) and the driver's
seconds to send it are in `cluster.shipped`; none of it is inside a timed pass. A classic application's driver
copies and unpacks the archive as it starts (in `startup_s`), each executor as it starts, before it takes a task;
under Connect the server and each executor unpack it for the session, an executor in its first task. The first
tasks are the preflight's (`pipeline.spark.preflight`), whose seconds, and each executor's wait to get ready for
its first task, are recorded beside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import platform
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from pipeline.config.schema import Config, Ship
from pipeline.rundir import temporary_name
from pipeline.spark.connect import is_connect

if TYPE_CHECKING:  # a task that unpickles a SparkFile imports this module: no torch for it
    from pipeline.inference.steps import Inference

log = logging.getLogger(__name__)

# What the tasks import from the tool (the UDF styles, topology, steps, ledger: `variants` and `pipeline`); conf/,
# sweeps/ and reports/ are the driver's.
CODE_PACKAGES = ("pipeline", "variants")
ENVIRONMENT = "environment"  # the directory an archive unpacks to in an executor's (or Connect session's) directory
ENV_PYTHON = f"./{ENVIRONMENT}/bin/python"
# What a packed environment leaves out: an editable install's import hook (it points at this checkout)
EDITABLE_HOOKS = ("__editable__",)


@dataclass(frozen=True)
class SparkFile(os.PathLike):
    """A file shipped with the application, as a path that resolves on whichever side opens it."""

    name: str

    def __fspath__(self) -> str:
        from pyspark import SparkFiles

        return SparkFiles.get(self.name)


def ship_file(spark: Any, path: Path) -> dict[str, Any]:
    """Send `path` to every executor of `spark`'s application; what was sent, how, and the driver's seconds."""
    started = time.perf_counter()
    if is_connect(spark):
        spark.addArtifacts(str(path), file=True)
        how = "Spark Connect artifact (addArtifacts file=True)"
    else:
        spark.sparkContext.addFile(str(path))
        how = "SparkContext.addFile"
    return {"file": path.name, "bytes": path.stat().st_size, "how": how, "seconds": time.perf_counter() - started}


def ship_weights(spark: Any, inference: Inference) -> tuple[Inference, dict[str, Any]]:
    """`inference` with its weights file shipped to the executors and opened there as a `SparkFile`; unchanged
    (and nothing shipped) for a model without weights."""
    weights = inference.model.weights_file
    if weights is None:
        return inference, {}
    shipped = ship_file(spark, Path(weights))
    model = dataclasses.replace(inference.model, weights_file=SparkFile(Path(weights).name))
    return dataclasses.replace(inference, model=model), {"weights": shipped}


# ---------------------------------------------------------------------------------------------- the tool's code


@dataclass(frozen=True)
class Made:
    """A file made (or found cached) to ship: where, its bytes, the seconds spent making it, and what it holds."""

    path: Path
    cached: bool
    seconds: float
    about: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        made = {"made_s": round(self.seconds, 3), "cached": self.cached}
        return {"file": self.path.name, "bytes": self.path.stat().st_size, **made, **self.about}


def _package_dir(package: str) -> Path:
    """A package's directory, or a top-level module's file."""
    module = importlib.import_module(package)
    source = Path(module.__file__).resolve()
    return source.parent if hasattr(module, "__path__") else source


def code_packages(config: Config) -> tuple[str, ...]:
    """What the code zip holds: the tool's packages, and a `model.factory`'s top-level package (or module), which
    the tasks import to build the model."""
    factory = config.model.factory
    top = factory.split(":")[0].split(".")[0] if factory else None
    return CODE_PACKAGES if top is None or top in CODE_PACKAGES else (*CODE_PACKAGES, top)


def code_files(packages: tuple[str, ...] = CODE_PACKAGES) -> list[tuple[Path, str]]:
    """(source, name in the zip) of every file of `packages` (or top-level modules) as this process imports them,
    sorted; compiled bytecode left out (zipimport would not check it against the sources)."""
    files = []
    for package in packages:
        root = _package_dir(package)
        if root.is_file():
            files.append((root, root.name))
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((path, f"{package}/{path.relative_to(root).as_posix()}"))
    return files


def content_key(files: list[tuple[Path, str]]) -> str:
    """A hash of the files' names and bytes: the zip's name, so an unchanged tree is zipped once."""
    digest = hashlib.sha256()
    for path, name in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_zip(directory: Path, packages: tuple[str, ...] = CODE_PACKAGES) -> Made:
    """The zip of `packages` in `directory` (`code-HASH.zip`), made unless one of the same content is there."""
    started = time.perf_counter()
    files = code_files(packages)
    path = Path(directory) / f"code-{content_key(files)}.zip"
    about = {"packages": list(packages), "from": [str(_package_dir(package)) for package in packages]}
    if path.exists():
        return Made(path, True, time.perf_counter() - started, about)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_name(path)  # the shipped dir may be a storage root two drivers on two hosts share
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for source, name in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # the bytes alone decide the zip
            info.external_attr = (source.stat().st_mode & 0o7777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    os.replace(partial, path)
    return Made(path, False, time.perf_counter() - started, about)


# ------------------------------------------------------------------------------------------- the environment


def site_packages(prefix: Path) -> list[Path]:
    """The environment's site-packages directories (purelib and platlib, once each)."""
    import sysconfig

    paths = sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})
    return list(dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib") if Path(paths[key]).is_dir()))


def environment_key(prefix: Path) -> dict[str, Any]:
    """What identifies a packed environment: its path, its Python and machine, pyvenv.cfg, and every
    distribution installed in it with its version. Files changed by hand without a version change are not seen:
    delete `cache_dir/shipped/env-*` to pack again."""
    distributions = metadata.distributions(path=[str(path) for path in site_packages(prefix)])
    return {
        "prefix": str(prefix),
        "python": platform.python_version(),
        "machine": f"{sys.platform}-{platform.machine()}",
        "pyvenv": (prefix / "pyvenv.cfg").read_text() if (prefix / "pyvenv.cfg").exists() else "",
        "distributions": sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions}),
    }


def _leave_out(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if Path(member.name).name.startswith(EDITABLE_HOOKS) else member


def _remove_abandoned(directory: Path) -> None:
    """Partial archives whose packing process is gone (killed mid-pack): gigabytes nothing will finish."""
    for partial in directory.glob(".env-*.tar.gz.*.tmp"):
        pid = partial.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            partial.unlink(missing_ok=True)


def pack_environment(directory: Path, prefix: Path | None = None) -> Made:
    """This process's virtualenv (or `prefix`) as `directory/env-HASH.tar.gz`, made unless it is there.

    Gzip at level 0 (stored): Spark unpacks a .tar.gz with tar, keeping modes and links, while a plain .tar goes
    through Java, which drops the executable bit (SPARK-38632) and refuses a "./" entry (both measured under
    Connect); deflate would cost minutes over gigabytes of compiled libraries for little (measured: 7.1 GB
    stored in about a minute here). Entries are relative (`bin/python`, `lib/...`), links kept as links.
    Archives of earlier versions of the same environment are deleted when a new one is made.
    """
    started = time.perf_counter()
    prefix = Path(prefix or sys.prefix)
    key = environment_key(prefix)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(directory) / f"env-{digest}.tar.gz"
    about = {"prefix": str(prefix), "python": key["python"], "distributions": len(key["distributions"])}
    if path.exists():
        return Made(path, True, time.perf_counter() - started, about)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path.parent)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(partial, "w:gz", compresslevel=0) as archive:
            for entry in sorted(prefix.iterdir()):
                archive.add(entry, arcname=entry.name, filter=_leave_out)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    for old in path.parent.glob("env-*.tar.gz"):  # an earlier version of this environment: gigabytes each
        sidecar = old.with_suffix("").with_suffix(".json")
        if old != path and sidecar.exists() and json.loads(sidecar.read_text()).get("prefix") == str(prefix):
            old.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
    path.with_suffix("").with_suffix(".json").write_text(json.dumps(key, indent=1))
    return Made(path, False, time.perf_counter() - started, about)


# ------------------------------------------------------------------------------------------------ the shipment


@dataclass(frozen=True)
class Shipment:
    """What a run ships to its executors by `cluster.ship`, made before its application starts."""

    mode: Ship
    code: Made | None = None
    environment: Made | None = None

    def startup_conf(self, connect: bool) -> dict[str, str]:
        """The application confs a classic session must start with: the environment's archive and the Python
        the workers run (`spark.pyspark.python`, which `pipeline.spark.session.spark_session` hands pyspark as
        PYSPARK_PYTHON). Under Connect the archive goes with the session (`ship`)."""
        if self.environment is None or connect:
            return {}
        return {"spark.archives": f"{self.environment.path}#{ENVIRONMENT}", "spark.pyspark.python": ENV_PYTHON}

    def ship(self, spark: Any) -> dict[str, Any]:
        """Send what the application did not start with; what went, how, and the seconds it took here."""
        shipped: dict[str, Any] = {"mode": self.mode.value}
        connect = is_connect(spark)
        if self.environment is not None:
            record = self.environment.record()
            started = time.perf_counter()
            if connect:
                spark.addArtifacts(f"{self.environment.path}#{ENVIRONMENT}", archive=True)
                spark.conf.set("spark.sql.execution.pyspark.python", ENV_PYTHON)
                how = f"addArtifacts(archive=True) as {ENVIRONMENT}/, spark.sql.execution.pyspark.python={ENV_PYTHON}"
            else:
                how = f"spark.archives=...#{ENVIRONMENT} and spark.pyspark.python={ENV_PYTHON} at the start"
            shipped["environment"] = {**record, "how": how, "seconds": round(time.perf_counter() - started, 3)}
        if self.code is not None:
            record = self.code.record()
            started = time.perf_counter()
            if connect:
                spark.addArtifacts(str(self.code.path), pyfile=True)
                how = "Spark Connect artifact (addArtifacts pyfile=True)"
            else:
                spark.sparkContext.addPyFile(str(self.code.path))
                how = "SparkContext.addPyFile"
            shipped["code"] = {**record, "how": how, "seconds": round(time.perf_counter() - started, 3)}
        return shipped


def shipment(config: Config, remote: bool) -> Shipment:
    """The shipment of `config`'s cluster, made (or found) in `cache_dir/shipped/`: nothing but for cluster=remote
    with `cluster.ship` code or env."""
    mode = getattr(config.cluster, "ship", Ship.installed) if remote else Ship.installed
    if mode is Ship.installed:
        return Shipment(mode)
    directory = Path(config.cache_dir).expanduser() / "shipped"
    environment = pack_environment(directory) if mode is Ship.env else None
    if environment is not None:
        log.info(
            "environment %s: %d bytes (%s)",
            environment.path,
            environment.path.stat().st_size,
            "cached" if environment.cached else f"packed in {environment.seconds:.1f} s",
        )
    return Shipment(mode, code_zip(directory, code_packages(config)), environment)
