"""What a run costs, from its own result: the machines it was billed on, at the prices it ran with.

The cost model (the original study's): every node of a run is billed, a driver that runs no tasks
included, for the run's median timed pass:

    usd_per_pass           = sum(count x usd_per_hour over the nodes) x seconds / 3600
    usd_per_million_images = usd_per_pass / num_images x 1e6

`seconds` is the median of `metrics.wall_s`, the nodes are `config.cluster.nodes` and the prices are
`config.cost.prices` (instance -> usd_per_hour, region, source, date), so each run is billed at the prices
it was configured with. `two_stage` runs two Spark jobs, the first on a cluster of its own when
`topology.preprocess_cluster` is set: the preprocess job is billed on `topology.preprocess_cluster.nodes`
(`cluster.nodes` without a preprocess cluster) for the median of `metrics.job_s["preprocess"]`, the predict
job on `cluster.nodes` for the median of `job_s["predict"]`, and the two are summed.

Not billed: cluster and Spark start-up, warm-up passes, data generation and weights preparation (one-off
costs that a long batch amortises), idle time, storage and network.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

SECONDS_PER_HOUR = 3600
IMAGES_PER_MILLION = 1e6


class CostUnavailable(ValueError):
    """A result that cannot be billed; the message says why."""


class UnknownInstance(CostUnavailable):
    """A node whose instance has no price in the run's price table."""


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    region: str
    source: str
    date: str


@dataclass(frozen=True)
class Node:
    role: str
    instance: str
    count: int


@dataclass(frozen=True)
class Cost:
    usd_per_pass: float
    usd_per_million_images: float
    table: str  # the price table's name (config.cost.name)
    prices: dict[str, Price]  # the prices this run was billed at, by instance


def usd_per_hour(nodes: list[Node], prices: dict[str, Price], table: str, key: str = "cluster.nodes") -> float:
    """What `nodes` cost together per hour; an instance without a price is an error that names it."""
    total = 0.0
    for node in nodes:
        if node.instance not in prices:
            raise UnknownInstance(
                f"{key}: instance {node.instance!r} (role {node.role}) has no price in cost={table}; "
                f"priced: {', '.join(sorted(prices)) or 'none'}"
            )
        total += node.count * prices[node.instance].usd_per_hour
    return total


def _median(values: list[float] | None, what: str) -> float:
    if not values:
        raise CostUnavailable(f"no timed pass to bill ({what} is empty)")
    return statistics.median(values)


def _nodes(entries: list[dict[str, Any]]) -> list[Node]:
    return [Node(entry.get("role", ""), entry["instance"], int(entry.get("count", 1))) for entry in entries]


def run_cost(result: dict[str, Any]) -> Cost:
    """Bill one result.json record by the model in the module docstring."""
    config, metrics = result.get("config") or {}, result.get("metrics") or {}
    if "cost" not in config or "nodes" not in config.get("cluster", {}):
        raise CostUnavailable("the result has no cost.prices or cluster.nodes (written before costs were recorded)")
    table = config["cost"].get("name", "")
    prices = {instance: Price(**price) for instance, price in config["cost"].get("prices", {}).items()}
    num_images = metrics.get("num_images")
    if not num_images:
        raise CostUnavailable("no image count to bill per image")
    cluster_nodes = _nodes(config["cluster"]["nodes"])
    used = list(cluster_nodes)
    if (config.get("topology") or {}).get("kind") == "two_stage":
        job_s = metrics.get("job_s") or {}
        preprocess_cluster = config["topology"].get("preprocess_cluster")
        preprocess_nodes = _nodes(preprocess_cluster["nodes"]) if preprocess_cluster else cluster_nodes
        used += preprocess_nodes
        usd = (
            usd_per_hour(preprocess_nodes, prices, table, "topology.preprocess_cluster.nodes")
            * _median(job_s.get("preprocess"), 'metrics.job_s["preprocess"]')
            + usd_per_hour(cluster_nodes, prices, table) * _median(job_s.get("predict"), 'metrics.job_s["predict"]')
        ) / SECONDS_PER_HOUR
    else:
        usd = usd_per_hour(cluster_nodes, prices, table) * _median(metrics.get("wall_s"), "metrics.wall_s")
        usd /= SECONDS_PER_HOUR
    return Cost(
        usd_per_pass=usd,
        usd_per_million_images=usd / num_images * IMAGES_PER_MILLION,
        table=table,
        prices={node.instance: prices[node.instance] for node in used},
    )
