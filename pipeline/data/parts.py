"""The files of a synthetic data set, made one at a time: what every generator's workers import, and nothing more.

Both generators write a data set's files here: the local pool's processes make rows (`synthetic_row`) that the
driver writes (`pipeline.data.datasets`), and a cluster job's tasks make and write whole files (`Parts.write`,
`write_parts`: `pipeline.spark.generation`), each file by `write_file`, so the two make the same bytes. This
module imports neither torch nor Spark nor Hydra: a worker that starts for a generation pays for numpy, Pillow and
pyarrow only (the data set module imports torch through preprocessing, measured at 8-30 s per Python worker on
this loaded machine, against the ~45 ms of CPU an image costs).

A task counts the images it has made into `_progress/FILE.json` in the staging directory at most every second;
the driver sums those counts per node (`pipeline.spark.generation.shown_progress`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.data import synthetic
from pipeline.data.formats import RAW_SIDE
from pipeline.rundir import atomic_write, staged

IMAGE_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.int32()), ("image", pa.binary())])
PROGRESS_DIR = "_progress"  # in a staging dir: the cluster job's tasks' counts
COUNT_EVERY_S = 1.0  # a task's count of images written to its progress file at most this often


def to_raw(image: Image.Image) -> bytes:
    """The original study's workload: shorter side resized to 256, center 256x256, uint8 HWC bytes."""
    scale = RAW_SIDE / min(image.size)
    width, height = max(RAW_SIDE, round(image.width * scale)), max(RAW_SIDE, round(image.height * scale))
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - RAW_SIDE) // 2, (height - RAW_SIDE) // 2
    return resized.crop((left, top, left + RAW_SIDE, top + RAW_SIDE)).tobytes()


def synthetic_row(args: tuple[int, int, str]) -> tuple[str, int, bytes]:
    """The row (id, label, image) of image `index` of the synthetic data set of `seed`, in `image_format`."""
    seed, index, image_format = args
    image = synthetic.synth_image(seed, index)
    data = to_raw(image) if image_format == "raw" else synthetic.encode_jpeg(image)
    return f"{index:09d}", synthetic.synth_label(seed, index), data


def synthetic_rows(seed: int, image_format: str, start: int, stop: int) -> Iterator[tuple[str, int, bytes]]:
    """The rows of images `start` to `stop` - 1 of a synthetic data set, in order, made in this process."""
    return map(synthetic_row, ((seed, index, image_format) for index in range(start, stop)))


def part_name(number: int) -> str:
    """The name of a data set's Parquet file `number` (0, 1, ...): file k holds images k * images_per_file on."""
    return f"part-{number:05d}.parquet"


def write_file(rows: Iterable[tuple[str, int, bytes]], path: Path, row_group_size: int) -> None:
    """One Parquet file of a data set: the one writer of every generator, so their files are the same bytes."""
    ids, labels, images = zip(*rows)
    table = pa.table([list(ids), list(labels), list(images)], schema=IMAGE_SCHEMA)
    pq.write_table(table, path, row_group_size=row_group_size)


def where() -> tuple[str, str]:
    """This process's node and machine (`pipeline.spark.nodes`, imported here only, which is light too)."""
    from pipeline.spark.nodes import host, machine

    return host(), machine()


@dataclass(frozen=True)
class Parts:
    """What a task needs to write file `number` of a synthetic data set into `staging` (pickled to executors)."""

    seed: int
    image_format: str
    num_images: int
    images_per_file: int
    row_group_size: int
    staging: str

    @property
    def files(self) -> int:
        return -(-self.num_images // self.images_per_file)

    def write(self, number: int) -> dict[str, Any]:
        """Make and write file `number` under a hidden name renamed when whole (`staged`: a killed or retried
        attempt leaves no half file under a data file's name), its count kept in the progress file as it goes;
        what it wrote, where, and how long it took (wall and this process's CPU seconds)."""
        started, cpu = time.time(), time.process_time()
        node, machine = where()
        first = number * self.images_per_file
        last = min(self.num_images, first + self.images_per_file)
        counter = _Counter(Path(self.staging) / PROGRESS_DIR / f"{number:05d}.json", node)
        rows = []
        for row in synthetic_rows(self.seed, self.image_format, first, last):
            rows.append(row)
            counter.count(len(rows))
        target = Path(self.staging) / part_name(number)
        with staged(target) as temporary:
            write_file(rows, temporary, self.row_group_size)
        counter.count(len(rows), force=True)
        return {
            "file": number,
            "host": node,
            "machine": machine,
            "images": len(rows),
            "bytes": target.stat().st_size,
            "start": started,
            "end": time.time(),
            "cpu_s": time.process_time() - cpu,
        }


class _Counter:
    """A task's images so far, written (whole, renamed into place) to its progress file at most every second."""

    def __init__(self, path: Path, node: str) -> None:
        self.path, self.node, self.written = path, node, 0.0

    def count(self, images: int, force: bool = False) -> None:
        if not force and time.monotonic() - self.written < COUNT_EVERY_S:
            return
        atomic_write(self.path, json.dumps({"host": self.node, "images": images}))
        self.written = time.monotonic()


def write_parts(parts: Parts, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A generation job's function (mapInArrow): each file number in the task's batches written, a row of facts
    about each."""
    for batch in batches:
        for number in batch.column(0).to_pylist():
            yield pa.RecordBatch.from_pylist([parts.write(number)])


def progress_counts(staging: Path) -> dict[str, int]:
    """Images written so far per node, from the tasks' progress files (a file being renamed is skipped)."""
    counts: dict[str, int] = {}
    for path in (staging / PROGRESS_DIR).glob("*.json"):
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        counts[found["host"]] = counts.get(found["host"], 0) + int(found["images"])
    return dict(sorted(counts.items()))
