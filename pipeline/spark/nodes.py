"""Which node a task ran on, and which machine: the proof of where a run's (or a generation's) work went.

A node is a host name (`socket.gethostname()` in the task: a standalone worker's machine, or a namespace node of
its own on this one). A machine is a running kernel, named by its boot id: nodes that share one share its CPUs,
as the namespace cluster's nodes share this machine's two cores, so the bottleneck model divides that machine's
cores among them instead of giving each node the cores it announces (`pipeline.projection.bottleneck.shape_of`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def host() -> str:
    """This process's node: its host name."""
    return socket.gethostname()


@cache
def executor() -> str:
    """This process's executor (`executor_of` the command lines of the processes above it). Several executors
    may share a node: this tells their tasks apart."""
    import psutil

    lines = []
    try:
        lines = [ancestor.cmdline() for ancestor in psutil.Process().parents()]
    except psutil.Error:
        pass
    return executor_of(lines)


def executor_of(lines: Iterable[list[str]]) -> str:
    """The `--executor-id` on the first command line that has one (how standalone, YARN and Kubernetes start an
    executor's JVM), else "driver" (local mode, where the driver's JVM runs the tasks)."""
    for line in lines:
        if "--executor-id" in line[:-1]:
            return line[line.index("--executor-id") + 1]
    return "driver"


@cache
def machine() -> str:
    """This process's machine: the kernel's boot id (the host name where the kernel does not say it)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return f"host:{host()}"


def where() -> dict[str, Any]:
    """What a task records about where it ran: node, executor, machine, and the machine's CPUs (read once per
    process)."""
    return dict(_where())


@cache
def _where() -> tuple[tuple[str, Any], ...]:
    return (("host", host()), ("executor", executor()), ("machine", machine()), ("cpu_count", os.cpu_count()))


def nodes_of(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per node (by host name), from task records that carry `host` (`where`): its tasks, images read and
    predicted, its machine and that machine's CPUs. Records without a host (written before nodes were recorded) are
    left out."""
    found: dict[str, dict[str, Any]] = {}
    for record in records:
        name = record.get("host")
        if not name:
            continue
        node = found.setdefault(
            name,
            {"tasks": 0, "rows_in": 0, "rows_out": 0, "machine": record.get("machine"), "cpu_count": None},
        )
        node["tasks"] += 1
        node["rows_in"] += record.get("rows_in", 0)
        node["rows_out"] += record.get("rows_out", 0)
        node["cpu_count"] = record.get("cpu_count") or node["cpu_count"]
    return dict(sorted(found.items()))


def machine_cpus(nodes: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The physical CPUs under `nodes` (`nodes_of`, a result's `evidence.task_nodes`): each distinct machine's CPUs
    counted once; None when a node's machine or CPUs are unknown."""
    machines: dict[str, int] = {}
    for node in nodes.values():
        if not node.get("machine") or not node.get("cpu_count"):
            return None
        machines[node["machine"]] = int(node["cpu_count"])
    return float(sum(machines.values())) if machines else None
