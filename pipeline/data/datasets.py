"""Data sets on disk: generated, imported from an ImageNet-layout folder, or given as Parquet.

Every engine reads the same Parquet files (columns id, label, image; `images_per_file` rows a file). A
generated or imported data set is cached under a directory keyed by its spec and reused, so generation
time is paid once and reported apart from any benchmark. A cached data set proves itself before it is used:
`_dataset.json` records its spec and every Parquet file's name, row count and size, and a cache that
disagrees (a file missing, extra, resized or unreadable) is generated again, with a warning saying why.
Writes go to a temporary directory that is renamed into place, with `_dataset.json` written last, so an
interrupted generation never leaves a half data set that looks complete.

Who writes the files: a process pool on this machine (`generate_locally`), or, for a run whose cluster is other
machines with a shared storage root, a Spark job on that cluster whose tasks write their own files straight into
the staging directory (`pipeline.spark.generation`). Both make rows and write files with `pipeline.data.parts`
(which imports no torch: a worker starts in seconds), so the two make the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config.schema import DatasetConfig, DataSource
from pipeline.data.parts import IMAGE_SCHEMA, PROGRESS_DIR, part_name, to_raw, write_file
from pipeline.data.parts import synthetic_row as _synthetic_row
from pipeline.inference.preprocess import DEFAULT_MAX_PIXELS, BadImage, bad_raw, decode_rgb
from pipeline.rundir import WRITE_ERRNOS, storage_error
from pipeline.runtime import progress
from pipeline.runtime.lifetime import die_with_parent
from pipeline.runtime.locks import bounded_lock

GENERATOR_VERSION = 1  # bump when synthetic images change, so cached data sets are rebuilt
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
META_FILE = "_dataset.json"
STAGING = ".tmp-"  # <data set>.tmp-<pid>: a generation in progress
GENERATION_WAIT_S = 2 * 3600.0  # the longest a run waits for another's generation of a data set it needs
log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A data set that cannot be benchmarked; raised before any engine starts."""


@dataclass(frozen=True)
class Dataset:
    path: Path
    num_images: int
    num_files: int
    size_bytes: int
    spec: dict
    generated: bool
    prepare_s: float
    row_group_rows: int = 0  # the most rows of any row group in its files, from their footers
    largest_file_bytes: int | None = None  # its largest file's: Spark's split size fits it (None: one file)
    generation: dict | None = None  # how it was generated now: where, seconds, images/s (None: cached, imported)


# Writes the Parquet files of a synthetic data set into a staging directory and says how (`Dataset.generation`):
# `generate_locally`, or `pipeline.spark.generation.ClusterGeneration`.
Generator = Callable[[DatasetConfig, Path], dict]


def _folder_row(args: tuple[str, str, int, str, int]) -> tuple[str, int, bytes]:
    path, image_id, label, image_format, max_pixels = args
    data = Path(path).read_bytes()
    if image_format == "raw":  # decoded here, so preprocess.max_pixels guards this decode as it would the task's
        try:
            data = to_raw(decode_rgb(data, max_pixels))
        except BadImage as error:
            data = bad_raw(str(error))  # kept with its reason: preprocessing reports it as a bad image
    return image_id, label, data


def _folder_listing(root: Path) -> list[tuple[str, str, int]]:
    """(path, id, label) for each image in root/<class>/..., labels numbered by sorted class name."""
    if not root.is_dir():
        raise DatasetError(f"dataset.folder={str(root)!r} is not a directory")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    listing = [
        (str(file), f"{name}/{file.relative_to(root / name)}", label)
        for label, name in enumerate(classes)
        for file in sorted((root / name).rglob("*"))
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not listing:
        raise DatasetError(f"dataset.folder={str(root)!r} holds no images in class subfolders (ImageNet layout)")
    return listing


def _spec(config: DatasetConfig, max_pixels: int) -> tuple[dict, list]:
    """The cache key of a data set and the work items that build it; a raw import decodes every file, so its
    key holds the pixel limit it decoded under."""
    base = {
        "source": config.source.value,
        "format": config.format.value,
        "images_per_file": config.images_per_file,
        "row_group_size": config.row_group_size,
    }
    if config.source is DataSource.synthetic:
        spec = base | {"num_images": config.num_images, "seed": config.seed, "generator": GENERATOR_VERSION}
        items = [(config.seed, index, config.format.value) for index in range(config.num_images)]
        return spec, items
    root = Path(config.folder).expanduser().resolve()
    listing = _folder_listing(root)[: config.num_images]
    fingerprint = hashlib.sha256()
    for path, image_id, label in listing:
        stat = os.stat(path)
        fingerprint.update(f"{image_id}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    spec = base | {"folder": str(root), "num_images": len(listing), "fingerprint": fingerprint.hexdigest()[:16]}
    if config.format.value == "raw":
        spec["max_pixels"] = max_pixels
    return spec, [(path, image_id, label, config.format.value, max_pixels) for path, image_id, label in listing]


def _pool_size(items: int) -> int:
    """Processes that make `items` rows here: one per core, but one process per 64 items at most."""
    return min(os.cpu_count() or 1, max(1, items // 64))


def _rows(config: DatasetConfig, items: list) -> Iterator[tuple[str, int, bytes]]:
    build = _synthetic_row if config.source is DataSource.synthetic else _folder_row
    workers = _pool_size(len(items))
    if workers == 1:
        yield from map(build, items)
        return
    # spawn, not fork: a test process may already hold a JVM gateway and its threads
    # each worker dies with this process (a SIGKILLed job would otherwise leave them hung)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        yield from pool.map(build, items, chunksize=16)


def _write(config: DatasetConfig, items: list, target: Path) -> None:
    """Every file of the data set into `target`, the rows made by a process pool on this machine."""
    rows = progress.iterate(_rows(config, items), f"data: {target.name.split(STAGING)[0]}", len(items))
    try:
        for number, start in enumerate(range(0, len(items), config.images_per_file)):
            chunk = [next(rows) for _ in range(min(config.images_per_file, len(items) - start))]
            write_file(chunk, target / part_name(number), config.row_group_size)
    finally:
        rows.close()  # every row was taken, none past the end: close the bar (and the row source) now


def generate_locally(config: DatasetConfig, target: Path) -> dict:
    """A synthetic data set's files written into `target` by a process pool on this machine (`_rows`), and how."""
    _, items = _spec(config, DEFAULT_MAX_PIXELS)
    started, cpu = time.perf_counter(), _cpu_s()
    _write(config, items, target)
    seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
    return {
        "on": "this machine",
        "processes": _pool_size(len(items)),
        "images": len(items),
        "seconds": seconds,
        "images_per_s": len(items) / seconds if seconds else None,
        "cpu_s_per_image": cpu / len(items),  # this process's and its pool's (reaped when it closes)
    }


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _manifest(path: Path) -> list[dict]:
    """Each Parquet file of a data set directory: its name, row count (from its footer) and size in bytes."""
    return [
        {"name": file.name, "rows": pq.ParquetFile(file).metadata.num_rows, "bytes": file.stat().st_size}
        for file in sorted(path.glob("*.parquet"))
    ]


def cache_damage(path: Path, spec: dict) -> str | None:
    """Why the cached data set in `path` cannot be trusted, or None when it proves itself against META_FILE:
    the same spec, the same Parquet files (none missing, none extra), each with its recorded rows and bytes."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except FileNotFoundError:
        return f"no {META_FILE}"
    except (OSError, ValueError) as error:
        return f"{META_FILE} unreadable: {error}"
    if not isinstance(meta, dict) or "files" not in meta:
        return f"{META_FILE} lists no files (written by an older version)"
    if meta.get("spec") != spec:
        return f"{META_FILE} records another spec"
    recorded = {entry["name"]: entry for entry in meta["files"]}
    present = {file.name for file in path.glob("*.parquet")}
    problems = [f"{name} missing" for name in sorted(recorded.keys() - present)]
    problems += [f"{name} not in {META_FILE}" for name in sorted(present - recorded.keys())]
    for name in sorted(recorded.keys() & present):
        file, entry = path / name, recorded[name]
        if file.stat().st_size != entry["bytes"]:
            problems.append(f"{name} has {file.stat().st_size} bytes, {entry['bytes']} recorded")
            continue
        try:
            rows = pq.ParquetFile(file).metadata.num_rows
        except (OSError, pa.ArrowException) as error:
            problems.append(f"{name} unreadable: {error}")
            continue
        if rows != entry["rows"]:
            problems.append(f"{name} has {rows} rows, {entry['rows']} recorded")
    return "; ".join(problems) or None


def _where(file: Path, rows: list[int]) -> str:
    return f"{file.name} row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))}"


def _check_rows(path: Path, files: list[Path], shown: int = 5) -> None:
    """Refuse a null id, a null label, or ids that repeat, naming the file, row and column (and the ids).

    Every image needs its own id: predictions, bad images and verification are all keyed by it (a repeated
    id is counted once by the accounting and joined twice by verification). A label is part of every
    prediction row: a null one is refused rather than guessed (drop the rows, or give them a label)."""
    where: dict[str, dict[Path, list[int]]] = {}
    for file in files:
        table = pq.read_table(file, columns=["id", "label"])
        for column in ("id", "label"):
            nulls = [row for row, value in enumerate(table.column(column).to_pylist()) if value is None]
            if nulls:
                raise DatasetError(
                    f"{path}: column {column!r} is null in {_where(file, nulls[:shown])}"
                    f"{f' and {len(nulls) - shown} more rows' if len(nulls) > shown else ''}; "
                    f"every row needs {'its own id' if column == 'id' else 'an integer label'}"
                )
        for row, image_id in enumerate(table.column("id").to_pylist()):
            where.setdefault(image_id, {}).setdefault(file, []).append(row)
    repeated = {
        image_id: places for image_id, places in where.items() if sum(len(rows) for rows in places.values()) > 1
    }
    if repeated:
        named = [
            f"{image_id!r} ({'; '.join(_where(file, rows) for file, rows in places.items())})"
            for image_id, places in list(repeated.items())[:shown]
        ]
        more = f" and {len(repeated) - shown} more" if len(repeated) > shown else ""
        raise DatasetError(
            f"{path}: {len(repeated)} ids repeat, and every image needs its own id (results, bad images and "
            f"verification are keyed by it): {', '.join(named)}{more}"
        )


def _odd(files: list[Path], why: dict[Path, str]) -> str:
    return "; ".join(f"{file.name}: {why[file]}" for file in files if file in why)


def describe(path: Path, spec: dict, generated: bool, prepare_s: float) -> Dataset:
    """The data set in `path`, every file checked before any engine reads it, as Spark will read them (every
    file whose name starts with neither `_` nor `.`): each a readable Parquet file with columns id, label
    (integers) and image (binary) of the same types as the others, and no null id or label or repeated id.
    A DatasetError names the odd files (and rows)."""
    entries = sorted(entry for entry in path.iterdir() if entry.is_file() and not entry.name.startswith(("_", ".")))
    files = [entry for entry in entries if entry.suffix == ".parquet"]
    if not files:
        raise DatasetError(f"{path} holds no .parquet files")
    others = [entry.name for entry in entries if entry.suffix != ".parquet"]
    if others:
        raise DatasetError(
            f"{path} holds files that are not Parquet, which Spark would read as Parquet: {', '.join(others)} "
            "(move them out, or start their names with '_' or '.')"
        )
    unreadable: dict[Path, str] = {}
    schemas: dict[Path, pa.Schema] = {}
    num_images = row_group_rows = 0
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as error:
            unreadable[file] = str(error)
            continue
        schemas[file], num_images = parquet.schema_arrow, num_images + parquet.metadata.num_rows
        groups = (parquet.metadata.row_group(number).num_rows for number in range(parquet.metadata.num_row_groups))
        row_group_rows = max(row_group_rows, *groups, 0)
    if unreadable:
        raise DatasetError(f"cannot read Parquet file(s) in {path}: {_odd(files, unreadable)}")
    for file, schema in schemas.items():
        missing = [name for name in IMAGE_SCHEMA.names if name not in schema.names]
        if missing:
            raise DatasetError(f"{file}: Parquet lacks column(s) {missing}; expected {IMAGE_SCHEMA.names}")
        image_type = schema.field("image").type
        if not (pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)):
            raise DatasetError(f"{file}: column 'image' is {image_type}, expected binary")
        label_type = schema.field("label").type
        if not pa.types.is_integer(label_type):
            raise DatasetError(f"{file}: column 'label' is {label_type}, expected integers")
    types = {
        file: tuple(str(schema.field(name).type) for name in IMAGE_SCHEMA.names) for file, schema in schemas.items()
    }
    first = files[0]
    differ = {
        file: ", ".join(
            f"{name} is {mine}" for name, mine, theirs in zip(IMAGE_SCHEMA.names, kinds, types[first]) if mine != theirs
        )
        for file, kinds in types.items()
        if kinds != types[first]
    }
    if differ:
        expected = ", ".join(f"{name} {kind}" for name, kind in zip(IMAGE_SCHEMA.names, types[first]))
        raise DatasetError(f"{path}: column types disagree with {first.name} ({expected}): {_odd(files, differ)}")
    if num_images == 0:
        raise DatasetError(f"{path}: the data set is empty")
    _check_rows(path, files)
    sizes = [file.stat().st_size for file in files]
    return Dataset(path, num_images, len(files), sum(sizes), spec, generated, prepare_s, row_group_rows, max(sizes))


def _generation_lock(lock_file: Path) -> AbstractContextManager[None]:
    """One process at a time checks, generates and describes a cached data set: two runs that need the same
    new data set generate it once (the second waits, then finds it cached), and none swaps the directory
    under another that reads it. An exclusive flock, released by the kernel however the holder ends; waited for at
    most GENERATION_WAIT_S, then a LockTimeout naming the lock file and its holder (`pipeline.runtime.locks`)."""
    return bounded_lock(lock_file, GENERATION_WAIT_S, f"generating data set {lock_file.stem}")


def _remove_stale_staging(path: Path) -> None:
    """Staging dirs of `path` left by a generation whose process is gone (killed with SIGKILL)."""
    for staging in path.parent.glob(f"{path.name}{STAGING}*"):
        pid = staging.name.rsplit(STAGING, 1)[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            log.warning("removing %s, left by a generation whose process %s is gone", staging, pid)
            shutil.rmtree(staging, ignore_errors=True)


def _clean_staging(staging: Path) -> None:
    """What a generator leaves beside the data files: its tasks' progress counts, and the hidden temporary file of
    a task attempt that died before its rename (its partition was written again by the next attempt)."""
    shutil.rmtree(staging / PROGRESS_DIR, ignore_errors=True)
    for leftover in staging.glob(".*"):
        if leftover.is_file():
            leftover.unlink()


def prepare(
    config: DatasetConfig,
    cache_dir: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    generate: Generator | None = None,
) -> Dataset:
    """The data set a run reads: found in the cache, or built into it now (and timed apart), under a lock.
    `max_pixels` (preprocess.max_pixels) limits the images a raw folder import decodes. `generate` writes a
    synthetic data set's files (default: `generate_locally`); a folder import is always made here."""
    started = time.perf_counter()
    if config.source is DataSource.parquet:
        path = Path(config.path).expanduser().resolve()
        if not path.is_dir():
            raise DatasetError(f"dataset.path={config.path!r} is not a directory")
        dataset = describe(path, {"source": "parquet", "path": str(path)}, False, time.perf_counter() - started)
        if config.num_images is not None and config.num_images != dataset.num_images:
            raise DatasetError(
                f"dataset.num_images={config.num_images}, but dataset.path={str(path)!r} holds {dataset.num_images} "
                f"rows in {dataset.num_files} files (for dataset=parquet it is the expected row count, not a limit; "
                "leave it unset to read every row)"
            )
        return dataset
    spec, items = _spec(config, max_pixels)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = (
        Path(cache_dir).expanduser()
        / "datasets"
        / f"{config.source.value}-{config.format.value}-{spec['num_images']}-{key}"
    )
    with _generation_lock(Path(cache_dir).expanduser() / "locks" / f"{path.name}.lock"):
        _remove_stale_staging(path)
        damage = cache_damage(path, spec) if path.exists() else "not cached yet"
        generated, generation = damage is not None, None
        if generated:
            if path.exists():
                log.warning("cached data set %s is damaged (%s): generating it again", path, damage)
            staging = path.with_name(f"{path.name}{STAGING}{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                staging.mkdir(parents=True)
                if config.source is DataSource.synthetic:
                    generation = (generate or generate_locally)(config, staging)
                    _clean_staging(staging)
                else:
                    _write(config, items, staging)
                meta = {"spec": spec, "files": _manifest(staging)}
                (staging / META_FILE).write_text(json.dumps(meta, indent=2))
                shutil.rmtree(path, ignore_errors=True)
                staging.rename(path)
            except OSError as error:
                if error.errno not in WRITE_ERRNOS:  # a source image that cannot be read, say
                    raise
                raise storage_error(error, path) from error  # pyarrow's error names no file
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        dataset = describe(path, spec, generated, time.perf_counter() - started)
        return replace(dataset, generation=generation)


def dataset_summary(dataset: Dataset) -> dict:
    summary = asdict(dataset)
    summary["path"] = str(dataset.path)
    return summary
