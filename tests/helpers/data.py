"""Small data sets written by hand: the corrupt images a real data set holds, and a Parquet file of given rows."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data import synthetic
from pipeline.data.datasets import IMAGE_SCHEMA, Dataset, describe


def corrupt_images() -> dict[str, bytes]:
    """One of each undecodable image a real data set contains, keyed by the id they get."""
    jpeg = synthetic.synth_jpeg(7, 0)
    return {
        "bad-empty": b"",
        "bad-truncated": jpeg[: len(jpeg) // 3],
        "bad-random": random.Random(0).randbytes(5000),
    }


def write_images(path: Path, rows: list[tuple[str, int, bytes]]) -> Dataset:
    path.mkdir(parents=True, exist_ok=True)
    ids, labels, images = zip(*rows)
    pq.write_table(pa.table([list(ids), list(labels), list(images)], schema=IMAGE_SCHEMA), path / "part-0.parquet")
    return describe(path, {"source": "parquet", "path": str(path)}, False, 0.0)
