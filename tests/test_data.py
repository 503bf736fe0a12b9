"""Specification of data sets on disk (pipeline.data.datasets): generated, imported from a folder, or given as
Parquet."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.data import datasets as data
from pipeline.data import synthetic
from pipeline.data.datasets import IMAGE_SCHEMA, META_FILE, Dataset, DatasetError, prepare
from pipeline.inference.preprocess import RAW_BYTES, Preprocessing
from tests.helpers.config import compose_config
from tests.helpers.data import write_images

JPEG_MAGIC = b"\xff\xd8\xff"


def synthetic_config(num_images: int, *overrides: str):
    return compose_config(f"dataset.num_images={num_images}", *overrides).dataset


def folder_config(root: Path, *overrides: str):
    return compose_config("dataset=folder", f"dataset.folder={root}", *overrides).dataset


def parquet_config(path: Path):
    return compose_config("dataset=parquet", f"dataset.path={path}").dataset


def parquet_files(dataset: Dataset) -> list[Path]:
    return sorted(dataset.path.glob("*.parquet"))


def read(dataset: Dataset) -> pa.Table:
    return pa.concat_tables([pq.read_table(file) for file in parquet_files(dataset)])


def encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


# --- generated data sets -----------------------------------------------------------------------------------
def test_a_generated_data_set_is_parquet_files_of_images_per_file_rows(tiny_dataset):
    files = parquet_files(tiny_dataset)
    assert [pq.ParquetFile(file).metadata.num_rows for file in files] == [8, 4]
    assert (tiny_dataset.num_images, tiny_dataset.num_files) == (12, 2)
    assert tiny_dataset.size_bytes == sum(file.stat().st_size for file in files)


def test_a_generated_data_set_has_string_ids_int32_labels_and_binary_images(tiny_dataset):
    for file in parquet_files(tiny_dataset):
        assert pq.read_schema(file).remove_metadata() == IMAGE_SCHEMA


def test_generated_ids_are_unique_and_labels_are_the_generators(tiny_dataset):
    table = read(tiny_dataset).to_pydict()
    assert len(set(table["id"])) == len(table["id"]) == 12
    seed = tiny_dataset.spec["seed"]
    assert table["label"] == [synthetic.synth_label(seed, int(image_id)) for image_id in table["id"]]


def test_generated_jpeg_rows_hold_the_synthetic_jpeg_bytes(tiny_dataset):
    table = read(tiny_dataset).to_pydict()
    assert table["image"][0] == synthetic.synth_jpeg(tiny_dataset.spec["seed"], int(table["id"][0]))
    assert all(image.startswith(JPEG_MAGIC) for image in table["image"])


def test_raw_rows_are_256x256x3_bytes(tmp_path):
    dataset = prepare(synthetic_config(2, "dataset.format=raw"), tmp_path)
    assert [len(image) for image in read(dataset)["image"].to_pylist()] == [RAW_BYTES, RAW_BYTES]


# --- the cache -----------------------------------------------------------------------------------------------
def test_preparing_the_same_spec_again_reuses_the_cache(tmp_path):
    first = prepare(synthetic_config(2), tmp_path)
    written = {file: file.stat().st_mtime_ns for file in parquet_files(first)}
    again = prepare(synthetic_config(2), tmp_path)
    assert first.generated is True
    assert again.generated is False
    assert again.path == first.path
    assert {file: file.stat().st_mtime_ns for file in parquet_files(again)} == written


@pytest.mark.parametrize(
    "change", ["dataset.seed=1", "dataset.format=raw", "dataset.images_per_file=1", "dataset.num_images=2"]
)
def test_a_different_spec_is_cached_in_a_different_directory(tmp_path, change):
    base = prepare(synthetic_config(1), tmp_path)
    other = prepare(synthetic_config(1, change), tmp_path)
    assert other.generated is True
    assert other.path != base.path
    assert base.path.is_dir()


def test_generation_is_deterministic_across_caches(tmp_path):
    first = prepare(synthetic_config(3), tmp_path / "one")
    second = prepare(synthetic_config(3), tmp_path / "two")
    assert first.path.name == second.path.name
    assert read(first).equals(read(second))


def test_an_interrupted_generation_leaves_nothing_that_looks_cached(tmp_path, monkeypatch):
    real_row = data._synthetic_row

    def fails_on_the_second_image(args):
        if args[1] == 1:
            raise RuntimeError("interrupted")
        return real_row(args)

    monkeypatch.setattr(data, "_synthetic_row", fails_on_the_second_image)
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare(synthetic_config(2, "dataset.images_per_file=1"), tmp_path)
    assert list((tmp_path / "datasets").iterdir()) == []
    monkeypatch.setattr(data, "_synthetic_row", real_row)
    assert prepare(synthetic_config(2, "dataset.images_per_file=1"), tmp_path).generated is True


def test_a_cached_data_set_records_its_spec(tmp_path):
    dataset = prepare(synthetic_config(1, "dataset.seed=5"), tmp_path)
    assert (dataset.path / META_FILE).is_file()
    assert dataset.spec["seed"] == 5 and dataset.spec["num_images"] == 1 and dataset.spec["source"] == "synthetic"


# --- folder import -------------------------------------------------------------------------------------------
@pytest.fixture
def imagenet_folder(tmp_path: Path) -> Path:
    """Three class folders in ImageNet layout, with non-image files beside the images and one broken JPEG."""
    root = tmp_path / "val"
    for name in ("tench", "ant", "goldfish"):
        (root / name).mkdir(parents=True)
    photo = Image.new("RGB", (320, 240), (40, 90, 160))
    (root / "README.txt").write_text("not a class")
    (root / "tench" / "b.JPEG").write_bytes(encode(photo, "JPEG"))
    (root / "tench" / "a.jpg").write_bytes(encode(photo, "JPEG"))
    (root / "tench" / "notes.txt").write_text("not an image")
    (root / "ant" / "c.png").write_bytes(encode(photo, "PNG"))
    (root / "goldfish" / "d.jpeg").write_bytes(encode(photo, "JPEG"))
    (root / "goldfish" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


def test_folder_import_numbers_classes_in_sorted_order_and_ids_are_class_slash_file(imagenet_folder, tmp_path):
    table = read(prepare(folder_config(imagenet_folder), tmp_path / "cache")).to_pydict()
    assert table["id"] == ["ant/c.png", "goldfish/broken.jpg", "goldfish/d.jpeg", "tench/a.jpg", "tench/b.JPEG"]
    assert table["label"] == [0, 1, 1, 2, 2]


def test_folder_import_ignores_files_that_are_not_images(imagenet_folder, tmp_path):
    dataset = prepare(folder_config(imagenet_folder), tmp_path / "cache")
    assert dataset.num_images == 5
    assert not any(image_id.endswith(".txt") for image_id in read(dataset)["id"].to_pylist())


def test_folder_import_as_jpeg_keeps_each_files_bytes(imagenet_folder, tmp_path):
    table = read(prepare(folder_config(imagenet_folder), tmp_path / "cache")).to_pydict()
    for image_id, image in zip(table["id"], table["image"]):
        assert image == (imagenet_folder / image_id).read_bytes()


def test_folder_import_as_raw_decodes_to_256x256x3_and_keeps_an_undecodable_file_as_a_bad_image(
    imagenet_folder, tmp_path
):
    table = read(prepare(folder_config(imagenet_folder, "dataset.format=raw"), tmp_path / "cache")).to_pydict()
    images = dict(zip(table["id"], table["image"]))
    broken = images.pop("goldfish/broken.jpg")
    assert {image_id: len(image) for image_id, image in images.items()} == dict.fromkeys(images, RAW_BYTES)
    _, positions, bad = Preprocessing(image_format="raw").crops([broken])
    assert positions == [] and bad[0][1].startswith("cannot decode")


def test_folder_import_as_raw_honours_max_pixels(imagenet_folder, tmp_path):
    (imagenet_folder / "ant" / "small.png").write_bytes(encode(Image.new("RGB", (90, 100)), "PNG"))
    limited = prepare(folder_config(imagenet_folder, "dataset.format=raw"), tmp_path / "cache", max_pixels=10_000)
    table = read(limited).to_pydict()
    _, positions, bad = Preprocessing(image_format="raw").crops(table["image"])
    reasons = {table["id"][position]: reason for position, reason in bad}
    assert [table["id"][position] for position in positions] == ["ant/small.png"]  # 9,000 pixels: under it
    assert reasons["tench/a.jpg"] == ("image is 320x240 = 76800 pixels, over the limit preprocess.max_pixels=10000")
    assert len(reasons) == 5
    unlimited = prepare(folder_config(imagenet_folder, "dataset.format=raw"), tmp_path / "cache")
    assert unlimited.path != limited.path  # another limit, another import


def test_folder_import_of_num_images_takes_the_first_images(imagenet_folder, tmp_path):
    table = read(prepare(folder_config(imagenet_folder, "dataset.num_images=2"), tmp_path / "cache"))
    assert table["id"].to_pylist() == ["ant/c.png", "goldfish/broken.jpg"]


def test_a_changed_folder_is_imported_again(imagenet_folder, tmp_path):
    first = prepare(folder_config(imagenet_folder), tmp_path / "cache")
    (imagenet_folder / "ant" / "e.png").write_bytes(encode(Image.new("RGB", (50, 50)), "PNG"))
    second = prepare(folder_config(imagenet_folder), tmp_path / "cache")
    assert second.generated is True
    assert second.path != first.path
    assert second.num_images == 6


def test_a_folder_that_does_not_exist_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="is not a directory"):
        prepare(folder_config(tmp_path / "missing"), tmp_path / "cache")


def test_a_folder_without_images_in_class_subfolders_is_a_dataset_error(tmp_path):
    (tmp_path / "val" / "tench").mkdir(parents=True)
    (tmp_path / "val" / "loose.jpg").write_bytes(encode(Image.new("RGB", (8, 8)), "JPEG"))
    with pytest.raises(DatasetError, match="holds no images in class subfolders"):
        prepare(folder_config(tmp_path / "val"), tmp_path / "cache")


# --- given Parquet -----------------------------------------------------------------------------------------
def test_given_parquet_is_described_in_place_and_never_copied(tmp_path):
    given = write_images(tmp_path / "given", [("x", 1, b"a"), ("y", 2, b"b")])
    dataset = prepare(parquet_config(given.path), tmp_path / "cache")
    assert dataset.path == given.path.resolve()
    assert (dataset.num_images, dataset.num_files, dataset.generated) == (2, 1, False)
    assert not (tmp_path / "cache").exists()


def test_given_parquet_may_store_images_as_large_binary(tmp_path):
    path = tmp_path / "large"
    path.mkdir()
    schema = pa.schema([("id", pa.string()), ("label", pa.int32()), ("image", pa.large_binary())])
    pq.write_table(pa.table([["x"], [0], [b"a"]], schema=schema), path / "part-0.parquet")
    assert prepare(parquet_config(path), tmp_path / "cache").num_images == 1


def write_table(path: Path, table: pa.Table) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-0.parquet")
    return path


def test_a_parquet_path_that_does_not_exist_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset\.path=.*missing.* is not a directory"):
        prepare(parquet_config(tmp_path / "missing"), tmp_path / "cache")


def test_a_directory_without_parquet_files_is_a_dataset_error(tmp_path):
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "empty-dir" / "data.csv").write_text("id,label,image\n")
    with pytest.raises(DatasetError, match=r"holds no \.parquet files"):
        prepare(parquet_config(tmp_path / "empty-dir"), tmp_path / "cache")


def test_a_data_set_of_zero_rows_is_a_dataset_error(tmp_path):
    path = write_table(tmp_path / "zero", IMAGE_SCHEMA.empty_table())
    with pytest.raises(DatasetError, match="the data set is empty"):
        prepare(parquet_config(path), tmp_path / "cache")


def test_parquet_without_an_image_column_is_a_dataset_error(tmp_path):
    path = write_table(tmp_path / "no-image", pa.table({"id": ["x"], "label": pa.array([0], pa.int32())}))
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['image'\]"):
        prepare(parquet_config(path), tmp_path / "cache")


def test_an_image_column_that_is_not_binary_is_a_dataset_error(tmp_path):
    table = pa.table({"id": ["x"], "label": pa.array([0], pa.int32()), "image": ["not bytes"]})
    path = write_table(tmp_path / "string-image", table)
    with pytest.raises(DatasetError, match="column 'image' is string, expected binary"):
        prepare(parquet_config(path), tmp_path / "cache")


def test_an_unreadable_parquet_file_is_a_dataset_error(tmp_path):
    path = tmp_path / "garbage"
    path.mkdir()
    (path / "part-0.parquet").write_bytes(b"this is not parquet" * 100)
    with pytest.raises(DatasetError, match="cannot read Parquet file"):
        prepare(parquet_config(path), tmp_path / "cache")
