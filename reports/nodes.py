"""The per-node section: for each run on a cluster of several nodes (a cluster of other machines), how busy each
node kept its task slots in the last timed pass and, under topology=model_server, what its own server did.

Slot use per node is `evidence.nodes` (`pipeline.spark.evidence.node_usage`: the node's task attempts' busy time
over its share of the task slots and the pass's wall time); the event log names a node by its executors' host (an
address on the namespace cluster), the server evidence by its name, so a node's row joins the two by address.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports.aggregate import Job


def _percent(value: Any) -> str:
    return "–" if value is None else f"{value:.0%}"


def node_rows(jobs: list[Job], frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per node of every ok run whose tasks ran on more than one node."""
    rows = []
    for job, row in zip(jobs, frame.to_dict("records")):
        result = job.decoded
        evidence = (result.evidence or {}) if result else {}
        nodes = evidence.get("nodes") or []
        if row["status"] != "ok" or len(nodes) < 2:
            continue
        served = {n["address"]: n for n in ((evidence.get("server") or {}).get("nodes") or [])}
        for node in nodes:
            server = served.get(node["host"]) or {}
            last = server.get("last_pass") or {}
            name = server.get("node")
            rows.append(
                {
                    "label": row["run_label"],
                    "node": f"{name} ({node['host']})" if name else node["host"],
                    "executors": ", ".join(node["executors"]) or "–",
                    "slots": node["slots"],
                    "tasks": node["tasks"],
                    "slot_use": _percent(node.get("slot_utilization")),
                    "idle": _percent(node.get("idle_slot_fraction")),
                    "server_images": last.get("images", "–") if server else "–",
                    "server_batches": last.get("batches", "–") if server else "–",
                    "server_cpu_ms_per_image": "–"
                    if last.get("cpu_ms_per_image") is None
                    else f"{last['cpu_ms_per_image']:.1f}",
                }
            )
    return rows
