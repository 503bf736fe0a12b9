"""What a result says about a simulated device (`model=accelerator`, `pipeline.inference.accelerator`): its
label, the profile and what the run overrode in it, and the evidence of the bound it ran under.

A simulated run's throughput is a prediction of what the harness would do around a device of that rate,
never a GPU measurement, so every place that names the model names it `simulated <device> <rate> img/s`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from pipeline.config.schema import Config, DeviceConfig, Engine

if TYPE_CHECKING:  # a report imports this through provenance: no torch, no Spark
    from pipeline.engines.base import Pass
    from pipeline.spark.plan import Plan

FIELDS = tuple(DeviceConfig.__dataclass_fields__)


def label(device: DeviceConfig) -> str:
    """The name of a simulated device wherever a result or report shows it."""
    return f"simulated {device.name} {device.images_per_s:g} img/s"


def _profile(name: str) -> dict[str, Any] | None:
    """The profile conf/device/NAME.yaml as written, or None when no profile has that name (a custom device)."""
    path = resources.files("conf") / "device" / f"{name}.yaml"
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.create(path.read_text()))


def overrides(device: DeviceConfig) -> dict[str, dict[str, Any]]:
    """The fields of the run's device that differ from its profile's YAML, each with both values
    (`device.images_per_s=200` on `device=t4_fp16`); every field when the name is no profile's."""
    profile = _profile(device.name) or {}
    record = asdict(device)
    record["kind"] = device.kind.value
    return {
        key: {"profile": profile.get(key), "run": record[key]}
        for key in FIELDS
        if key not in profile or profile[key] != record[key]
    }


def device_record(device: DeviceConfig) -> dict[str, Any]:
    """The device as a result's provenance keeps it: simulated, its figures, source and kind, and overrides."""
    record = asdict(device)
    record["kind"] = device.kind.value
    return {"simulated": True, "label": label(device), **record, "overridden": overrides(device)}


def _devices(config: Config, plan: Plan | None) -> int:
    """How many simulated devices the run had: each worker's GPU addresses, or one per executor JVM (one
    for `cluster=local`, `engine=torch`); Ray gets one actor per emulated GPU."""
    if config.engine.name is Engine.spark:
        if plan.gpus.kind != "none":
            return plan.gpus.per_worker * plan.workers
        return 1 if plan.master and plan.master.startswith("local[") else plan.workers
    if config.engine.name is Engine.ray:
        return max(config.gpu.emulate, 1)
    return 1


def device_usage(config: Config, plan: Plan | None, last: Pass, server: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evidence of the bound in the last timed pass: how long model calls held the devices and waited for
    them, as a share of the pass (busy near 1: device-bound; near 0: the devices idled, the CPU bound it),
    and the stand-in's own law (held seconds over `latency_s + n / images_per_s` summed over the calls).
    Under topology=model_server the calls run in the server, so they are read from the server's evidence
    (`server`: the totals its instances publish for the last pass), and `measured_in` says so."""
    device = config.device
    if server is not None and "device_busy_s" in server.get("last_pass", {}):
        served = server["last_pass"]
        busy, wait, calls = served["device_busy_s"], served["device_wait_s"], served["device_calls"]
        images = served["images"]
        task_s = 0.0
        measured_in = "the model server's instances (their simulated devices' totals)"
    else:
        records = [r for r in last.tasks.get("records", []) if r.get("device_calls")]
        busy = sum(r["device_busy_s"] for r in records)
        wait = sum(r["device_wait_s"] for r in records)
        calls = sum(r["device_calls"] for r in records)
        images = sum(r["rows_out"] for r in records)
        task_s = sum(r["end"] - r["start"] for r in records)
        measured_in = "the tasks' model calls"
    expected = calls * device.latency_s + images / device.images_per_s
    devices = _devices(config, plan)
    model_job_s = list(last.jobs.values())[-1] if last.jobs else last.seconds
    return {
        "label": label(device),
        "measured_in": measured_in,
        "devices": devices,
        "pass_s": last.seconds,
        "model_job_s": model_job_s,
        "model_calls": calls,
        "images": images,
        "busy_s": busy,
        "wait_s": wait,
        "busy_fraction": busy / (last.seconds * devices) if last.seconds else None,
        "busy_fraction_of_model_job": busy / (model_job_s * devices) if model_job_s else None,
        "wait_fraction_of_model_tasks": wait / task_s if task_s else None,
        "expected_busy_s": expected,
        "law_ratio": busy / expected if expected else None,
        # the machine's 1-minute load average when the run ended: above its cores, other processes took CPU the
        # bottleneck model assumes the run had
        "load_average_1m": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
