"""The docs: the generated pages, docs/configuration.md from the config (`pipeline.config.reference`) and
docs/findings.md from the kept results (`reports.findings`), each what its generator writes now (a page that
drifted fails naming the command that rewrites it); every relative link of README.md and docs/*.md reaching its
file and heading; and the layout page naming every package and module of the tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import reference
from pipeline.results import as_result
from reports import findings
from tests.helpers import markdown
from tests.helpers.results import write

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LAYOUT = ROOT / "docs" / "layout.md"
PACKAGES = ("pipeline", "reports", "variants")


def test_the_configuration_reference_is_what_the_config_says():
    page = ROOT / reference.PAGE
    difference = reference.drift(page, reference.render())
    if difference:
        pytest.fail(f"{difference}\n\n{reference.PAGE} is out of date: run `{reference.COMMAND}`", pytrace=False)


def test_every_key_of_every_option_has_a_meaning():
    missing = reference.missing_meanings()
    assert not missing, (
        "keys with no meaning in their option's YAML (`key: value  # meaning`), the schema's comment or another "
        "option of the group:\n" + "\n".join(missing)
    )


def test_the_findings_page_is_what_the_kept_results_give():
    page = ROOT / findings.PAGE
    difference = reference.drift(page, findings.render())
    if difference:
        pytest.fail(f"{difference}\n\n{findings.PAGE} is out of date: run `{findings.COMMAND}`", pytrace=False)


@pytest.fixture
def config_copy(tmp_path, monkeypatch):
    """conf/ and sweeps/ copied into a scratch checkout the reference reads instead of this one."""
    for name in ("conf", "sweeps"):
        shutil.copytree(ROOT / name, tmp_path / name)
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    return tmp_path


def test_a_new_option_appears_with_its_keys_values_and_meanings(config_copy):
    (config_copy / "conf" / "device" / "b200_fp8.yaml").write_text(
        "# A device nobody measured.\nname: b200_fp8\nimages_per_s: 40000.0   # a guess\nbatch_size: 512\n"
    )
    page = reference.render()
    section = page.split("### device=b200_fp8", 1)[1].split("\n### ", 1)[0]
    assert "A device nobody measured." in section
    assert "| `device.images_per_s` | float | `40000.0` |  | a guess |" in section
    assert "| `device.batch_size` | int | `512` |  | the batch size the figure was measured or assumed at |" in section


def test_an_option_key_comment_wins_over_the_schema_and_bare_overrides_say_nothing(config_copy):
    path = config_copy / "conf" / "cluster" / "standalone.yaml"
    text = path.read_text().replace(
        "task_cpus: 1          # cluster.task_cpus=N", "task_cpus: 1  # cores per task here"
    )
    path.write_text(text.replace("workers: 1            # cluster.workers=W", "workers: 1  # cluster.workers=W"))
    section = reference.render().split("### cluster=standalone", 1)[1].split("\n## ", 1)[0]
    assert "| `cluster.task_cpus` | int | `1` |  | cores per task here |" in section
    assert "| `cluster.workers` | int | `1` |  | executors (one per worker) |" in section  # the schema's


def test_a_key_with_no_meaning_anywhere_is_listed(config_copy):
    preset = "# @package _global_\n# A preset with a knob nobody explained.\ngpu: {emulate: 2, new_knob: 3}\n"
    (config_copy / "conf" / "same_slots" / "extra.yaml").write_text(preset)
    assert reference.missing_meanings() == ["same_slots=extra: gpu.new_knob"]


def test_a_preset_lists_what_it_selects_and_sets():
    found = {(group.name, option.name): option for group in reference.groups() for option in group.options}
    preset = found[("original", "two_stage")]
    assert "cluster@topology.preprocess_cluster=local_cluster" in preset.selects
    rows = {key.path: key for key in preset.keys}
    assert rows["topology.preprocess_cluster.worker_cores"].default == "8"
    assert rows["topology.preprocess_cluster.worker_cores"].type == "int"
    assert rows["udf.rebuild_model_per_batch"].meaning.startswith("its notebook built the model")


def test_a_sweep_says_what_it_runs():
    sweep = next(item for item in reference.sweeps() if item.name == "smoke")
    assert sweep.params == (("udf", ("map_in_pandas", "iterator_pandas_udf")), ("model.batch_size", ("4", "8")))
    assert "dataset.num_images=16" in sweep.fixed
    assert "Runs 4 jobs:" in reference.render().split("### sweep=smoke", 1)[1]


def test_the_reference_check_fails_on_a_stale_page_naming_the_command(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(reference.render().replace("| `warmup` | int | `1` |", "| `warmup` | int | `2` |"))
    assert reference.main(["--check", "--output", str(stale)]) == 1
    error = capsys.readouterr().err
    assert "-| `warmup` | int | `2` |" in error and "+| `warmup` | int | `1` |" in error
    assert "python -m pipeline.config.reference" in error
    assert reference.main(["--output", str(stale)]) == 0
    assert reference.main(["--check", "--output", str(stale)]) == 0


# ------------------------------------------------------------------------------------------------ findings


def _sweep(directory: Path, runs: dict[str, dict]) -> Path:
    """A sweep dir as Hydra leaves it: multirun.yaml with the command's overrides, a job dir per run."""
    directory.mkdir(parents=True)
    (directory / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["sweep=peers"]}}}))
    for name, kwargs in runs.items():
        kwargs = dict(kwargs)
        rate = kwargs.pop("rate")
        path = write(directory / name, rate, **kwargs)
        record = json.loads(path.read_text())
        record["env"] |= {"cpu_count": 2, "cpu_model": "AMD EPYC", "load_average": [0.5, 0.4, 0.3]}
        record["env"] |= {"load_average_end": [1.9, 0.8, 0.4], "git_sha": "0123456789abcdef"}
        record["tasks"] = {"records": [{"task": 1}], "model_builds": 1}
        record["evidence"] = {"timeline": [[0, 1]], "checks": {}}
        path.write_text(json.dumps(record))
        (directory / name / ".hydra").mkdir()
        (directory / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"+peer={name}"]))
    return directory


def test_kept_runs_lose_their_task_records_and_say_what_made_them(tmp_path):
    sweep = _sweep(tmp_path / "runs" / "peers-256", {"torch": {"rate": 300.0, "engine": "torch", "first": 30.0}})
    written = findings.keep("peers", [sweep], tmp_path / "kept")
    assert written == [tmp_path / "kept" / "peers" / "peers-256" / "torch" / "result.json"]
    kept = json.loads(written[0].read_text())
    assert "records" not in kept["tasks"] and kept["tasks"]["model_builds"] == 1
    assert "timeline" not in kept["evidence"]
    assert kept["kept"]["command"] == "python -m pipeline -m sweep=peers"
    assert kept["kept"]["overrides"] == ["+peer=torch"]
    assert as_result(kept).metrics.throughput_images_per_s == pytest.approx(300.0)


def test_a_finding_is_written_from_its_kept_runs_with_date_machine_load_and_sha(tmp_path):
    sweep = _sweep(
        tmp_path / "runs" / "peers-256",
        {"torch": {"rate": 300.0, "engine": "torch", "first": 30.0}, "spark": {"rate": 150.0, "first": 10.0}},
    )
    findings.keep("peers", [sweep], tmp_path / "kept")
    page = findings.render(tmp_path / "kept")
    section = page.split("## Versus peers, and the fast path\n", 1)[1].split("\n## ", 1)[0]
    assert "2 kept runs in `docs/results/peers/`" in section and "no run on a loaded machine" in section
    assert "python -m pipeline -m sweep=peers" in section
    assert "| 150 | 0.50x |" in section  # Spark's warm throughput and its ratio to torch's best
    assert "| `peers-256/spark` |" in section and "| 0.5 → 1.9 | 0123456789ab |" in section
    assert "`peers` |" not in page.split("## Awaiting re-measurement", 1)[1]  # no longer awaiting


def test_a_run_that_started_on_a_busy_machine_is_marked_loaded():
    env = {"cpu_count": 2, "load_average": [6.6, 9.1, 11.4], "load_average_end": [7.0, 9.0, 11.0]}
    assert findings.loaded(env) is True
    assert findings._load_text(env) == "6.6 → 7.0 (loaded)"
    assert findings.loaded({"cpu_count": 2, "load_average": [1.5, 1, 1]}) is False
    assert findings.loaded({"cpu_count": 2}) is None


def test_a_finding_without_kept_runs_awaits_re_measurement_without_figures(tmp_path):
    page = findings.render(tmp_path / "nothing-kept")
    awaiting = page.split("## Awaiting re-measurement", 1)[1]
    for finding in findings.FINDINGS:
        assert f"| `{finding.name}` | {findings._measured_link(finding.section)} | `{finding.command}` |" in awaiting


def test_the_findings_check_fails_on_a_stale_page_naming_the_command(tmp_path, capsys):
    stale = tmp_path / "findings.md"
    stale.write_text("# Findings\n\nfigures copied by hand\n")
    arguments = ["--check", "--output", str(stale), "--results", str(tmp_path / "kept")]
    assert findings.main(arguments) == 1
    error = capsys.readouterr().err
    assert "-figures copied by hand" in error and "python -m reports.findings" in error


def test_keeping_under_an_unknown_finding_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no finding named 'pears'"):
        findings.keep("pears", [tmp_path], tmp_path / "kept")


# ------------------------------------------------------------------------------------------------ links and layout


def test_every_relative_link_in_the_readme_and_docs_names_a_file_that_exists():
    missing = markdown.missing_files(PAGES)
    assert not missing, "links to files that do not exist:\n" + "\n".join(missing)


def test_every_anchor_in_the_readme_and_docs_names_a_heading_of_its_page():
    missing = markdown.missing_anchors(PAGES)
    assert not missing, "links to headings that do not exist (GitHub's anchors):\n" + "\n".join(missing)


def test_anchors_are_githubs_heading_slugs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Spark 4.3's Python fast paths, measured\n\n## Shipping it: `cluster.ship`\n\n## Notes\n\n## Notes\n\n"
        '```\n# not a heading\n```\n\n## Where the original\'s "1 s took 84.8 s" went\n'
    )
    assert markdown.anchors(page) == {
        "spark-43s-python-fast-paths-measured",
        "shipping-it-clustership",
        "notes",
        "notes-1",
        "where-the-originals-1-s-took-848-s-went",
    }


def test_a_broken_link_is_reported_with_its_page_and_line(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#other) [gone](gone.md) [no heading](other.md#nope) [here](#page) [bad](#nope)\n"
        "`[code](not-a-link.md)` [site](https://example.com/x.md)\n"
    )
    assert markdown.missing_files([page]) == ["page.md:3: (gone.md)"]
    assert markdown.missing_anchors([page]) == ["page.md:3: (other.md#nope)", "page.md:3: (#nope)"]


def test_the_layout_page_names_every_package_and_module_of_the_tree():
    missing = markdown.unnamed_in_layout(LAYOUT, ROOT, PACKAGES)
    assert not missing, f"{LAYOUT.relative_to(ROOT)} does not name (add each to its folder's entry):\n" + "\n".join(
        missing
    )


def test_a_module_or_package_the_layout_leaves_out_is_reported(tmp_path):
    for name in ("tool/__init__.py", "tool/run.py", "tool/new.py", "tool/inner/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    layout = tmp_path / "layout.md"
    layout.write_text("# Layout\n\n```\ntool/       run (a run) ·\n            tool.new is not a name\n```\n")
    assert markdown.unnamed_in_layout(layout, tmp_path, ["tool"]) == ["tool/new.py", "tool/inner/ (no entry)"]
