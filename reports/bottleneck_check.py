"""The bottleneck model checked against runs under a simulated device (`sweep=bottleneck_check`).

Why: `pipeline.projection.bottleneck` predicts a run's throughput from measured rates and a cluster shape; its
projections to GPU instances are only worth what its agreement with real runs here is. Every ok `model=accelerator`
run is a check: its recorded config gives the topology, the cluster shape and the device (`shape_of`, `device_of`),
the rates come from `pipeline.projection.rates` (the measurements under the same directories, the checked run itself
left out, or its defaults), and its measured throughput is set against the prediction. A model_server run's request
and server CPU costs (`SERVER_RATES`) are fitted from model_server runs, which the check sweep's are: those come
from the other checked runs, and the table says so. A run also carries the stand-in's evidence of its bound
(`evidence.simulated_device.busy_fraction`), which says whether the run was device-bound as predicted.

With a rates file (`sweep=calibrate`'s), every run is predicted from its rates instead: the advisor's own inputs,
measured by other runs than the checked ones, which is what the advice's predictions are worth. A calibration's
own directory holds one (`rates.json`), and its runs are checked from it: whether the rates the advice will use
rebuild the passes they were measured from, printed at the calibration's end.

    python -m reports.bottleneck_check DIR [DIR ...] [--rates FILE]   # the table and the spread, printed
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.projection.bottleneck import Rates, device_of, predict, shape_of
from pipeline.projection.calibrate import Calibration, RatesFileError, kept_rates, load
from pipeline.projection.rates import measured_rates, serve_runs
from pipeline.results import read_results
from pipeline.spark.nodes import machine_cpus
from reports.aggregate import Job, find_jobs

TARGET = (0.8, 1.25)  # predicted / measured within this band counts as a hit (issue 13's target)
# fitted from model_server runs (`pipeline.projection.rates.serve_runs`)
SERVER_RATES = ("request_s", "serve_cpu_s_per_image")


@dataclass(frozen=True)
class Check:
    """One run: what it was, what it measured, what the model predicted, and what bound each."""

    job_dir: str
    topology: str
    device: str
    images_per_s: float  # the device's rate
    gpus: int
    measured: float
    predicted: float
    predicted_bound: str
    predicted_gpu_busy: float
    measured_busy: float | None  # the devices' busy share of the last pass, measured by the stand-in
    load_average: float | None  # the machine's 1-minute load average when the run ended
    fitted_on_checked: int = 0  # the other checked runs the prediction's SERVER_RATES were fitted from

    @property
    def ratio(self) -> float:
        return self.predicted / self.measured

    @property
    def hit(self) -> bool:
        return TARGET[0] <= self.ratio <= TARGET[1]


def _checkable(job: Job) -> bool:
    """An ok simulated-device run with a throughput."""
    result = job.decoded
    return (
        result is not None
        and result.status == "ok"
        and bool(result.env.get("device"))
        and result.metrics.throughput_images_per_s is not None
    )


def _image_path(config: dict[str, Any]) -> tuple[str, str]:
    """The image format and JPEG decoder a run's recorded config ran: the rates it is predicted from must be theirs."""
    return (config.get("dataset") or {}).get("format", "jpeg"), (config.get("preprocess") or {}).get("decoder", "pil")


def _check(
    job: Job,
    rates: dict[tuple[Any, ...], Any],
    directories: list[Path],
    served: set[Path],
    calibrated: Rates | None = None,
) -> Check | None:
    """The run against its prediction, from rates that leave the run out (`served`: the job dirs of the
    model_server runs the SERVER_RATES are fitted from) or from `calibrated` (a rates file's);
    None for a run without GPUs (a simulated device on the CPU, as sweep=calibrate's server run), which the model
    has nowhere to place."""
    result = job.decoded
    config = result.config
    topology, shape, workload = shape_of(
        config,
        result.env.get("cpu_count"),
        (result.cluster or {}).get("gpus"),
        machine_cpus(result.evidence.get("task_nodes") or {}),
    )
    if not shape.gpus_per_node:
        return None
    image_format, decoder = _image_path(config)
    leave_out = (job.dir,)  # its own task cost (`rates.task_runs`) and server costs are not its prediction's
    key = (image_format, decoder, leave_out)
    if calibrated is None and key not in rates:
        rates[key] = measured_rates(directories, image_format=image_format, decoder=decoder, leave_out=leave_out)
    device = device_of(config)
    prediction = predict(topology, calibrated or rates[key], device, shape, workload)
    usage = result.evidence.get("simulated_device") or {}
    return Check(
        job_dir=str(job.dir),
        topology=topology,
        device=result.env["device"]["label"],
        images_per_s=device.images_per_s,
        gpus=shape.gpus_per_node * shape.nodes,
        measured=result.metrics.throughput_images_per_s,
        predicted=prediction.images_per_s,
        predicted_bound=prediction.bound,
        predicted_gpu_busy=prediction.utilization.get("gpus", 0.0),
        measured_busy=usage.get("busy_fraction"),
        load_average=usage.get("load_average_1m"),
        fitted_on_checked=len(served - {job.dir}) if topology == "model_server" and not calibrated else 0,
    )


def checks(directories: list[Path], calibration: Calibration | None = None) -> list[Check]:
    """Every ok simulated-device run on GPUs under `directories`, checked, in sweep order: from the rates of the
    other checked runs, or from `calibration`'s (a rates file's; RatesFileError for one measured on another image
    format or decoder than a checked run's)."""
    directories = [Path(directory) for directory in directories]
    checked = [job for job in find_jobs(directories) if _checkable(job)]
    dirs = {job.dir for job in checked}
    served = {path.parent for path, _, _ in serve_runs(read_results(directories))} & dirs
    rates: dict[tuple[Any, ...], Any] = {}
    if calibration is not None:
        for job in checked:
            ran = _image_path(job.decoded.config)
            if ran != (calibration.image_format, calibration.decoder):
                raise RatesFileError(
                    f"the rates file was measured on {calibration.image_format} decoded by {calibration.decoder}, "
                    f"but {job.dir} ran {ran[0]} decoded by {ran[1]}"
                )
    calibrated = calibration.rates if calibration else None
    found = (_check(job, rates, directories, served, calibrated) for job in checked)
    return [check for check in found if check is not None]


def spread(found: list[Check]) -> dict[str, Any]:
    """How far the model is from the runs: hits in the target band, and the ratios' median, min and max."""
    ratios = [check.ratio for check in found]
    return {
        "runs": len(found),
        "hits": sum(check.hit for check in found),
        "median": statistics.median(ratios) if ratios else None,
        "min": min(ratios, default=None),
        "max": max(ratios, default=None),
    }


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def table(found: list[Check]) -> list[list[str]]:
    """Rows of the predicted/measured table (docs/measurements.md's and the report's), with a header row."""
    rows = [
        [
            "topology",
            "device",
            "GPUs",
            "measured img/s",
            "predicted img/s",
            "predicted/measured",
            "predicted bound",
            "device busy (measured)",
            "device busy (predicted)",
            "load average",
            "rates from other checked runs",
        ]
    ]
    for check in found:
        rows.append(
            [
                check.topology,
                check.device,
                str(check.gpus),
                f"{check.measured:.1f}",
                f"{check.predicted:.1f}",
                f"{check.ratio:.2f}",
                check.predicted_bound,
                _percent(check.measured_busy),
                _percent(check.predicted_gpu_busy),
                "–" if check.load_average is None else f"{check.load_average:.1f}",
                f"{', '.join(SERVER_RATES)} ({check.fitted_on_checked})" if check.fitted_on_checked else "–",
            ]
        )
    return rows


def summary(directories: list[Path], rates_file: Path | None = None) -> list[str]:
    """Lines a sweep prints at its end (`pipeline.callbacks`): predicted/measured per run and the spread;
    nothing when the sweep ran no simulated device. Without `rates_file`, the one a directory holds (a
    calibration's own) where exactly one does."""
    if rates_file is None:
        kept = kept_rates(directories)
        rates_file = kept[0] if len(kept) == 1 else None
    found = checks(directories, load(rates_file) if rates_file else None)
    if not found:
        return []
    source = f"rates from {rates_file}" if rates_file else "rates from the other checked runs"
    lines = [f"bottleneck model, predicted / measured per run (simulated devices, not GPU figures; {source}):"]
    lines += [" | ".join(row) for row in table(found)]
    shown = spread(found)
    lines.append(
        f"{shown['hits']} of {shown['runs']} runs within {TARGET[0]}-{TARGET[1]}x; predicted/measured median "
        f"{shown['median']:.2f}, min {shown['min']:.2f}, max {shown['max']:.2f}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reports.bottleneck_check",
        description="Each simulated-device run under the DIRs against the bottleneck model's prediction.",
    )
    parser.add_argument("directories", nargs="+", type=Path, metavar="DIR")
    parser.add_argument("--rates", type=Path, help="predict from this rates file (sweep=calibrate's rates.json)")
    arguments = parser.parse_args(argv)
    missing = [path for path in arguments.directories if not path.is_dir()]
    if missing:
        parser.error(f"{missing[0]} is not a directory")
    try:
        lines = summary(arguments.directories, arguments.rates)
    except RatesFileError as error:
        parser.error(str(error))
    print(
        "\n".join(lines)
        if lines
        else "no simulated-device run on GPUs under " + ", ".join(map(str, arguments.directories))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
