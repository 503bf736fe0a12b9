"""Command-line overrides Hydra would reject with a bare error, caught before Hydra composes the run.

`topology.preprocess_cluster.KEY=...` sets a key of a config node that exists only once an option was chosen
for it (`+cluster@topology.preprocess_cluster=OPTION`, or a preset such as `+original=two_stage`); without one
the node is null and OmegaConf's `update` fails with `AssertionError: Unexpected type for root: NoneType`,
which Hydra prints as a page of trace naming neither the key nor the fix.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from pipeline.config.schema import ClusterMode

PREPROCESS_CLUSTER_KEY = re.compile(r"^\+{0,2}topology\.preprocess_cluster\.[^=]+=")


def _first_values(overrides: list[str]) -> list[str]:
    """The overrides with each sweep (`a,b`, `range(...)`) reduced to its first value: the composition of any
    one job decides whether the node exists, and Hydra's compose API takes no sweeps."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = []
    for line, override in zip(overrides, parsed):
        if override.is_sweep_override():
            key = line.split("=", 1)[0]
            first.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        else:
            first.append(line)
    return first


def missing_preprocess_cluster(argv: Sequence[str]) -> str | None:
    """Why these command-line arguments set `topology.preprocess_cluster.KEY` on a null node, or None.

    Only arguments that set such a key are looked into (composing costs about half a second): the run is
    composed as Hydra would compose it, and only OmegaConf's bare AssertionError is turned into a message;
    any other composition error is left for Hydra to report as usual.
    """
    keys = [arg for arg in argv if PREPROCESS_CLUSTER_KEY.match(arg)]
    if not keys:
        return None
    overrides = [arg for arg in argv if not arg.startswith("-") and "=" in arg and not arg.startswith("hydra.")]
    try:
        overrides = _first_values(overrides)
    except Exception:  # a malformed override: Hydra names it
        return None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            compose(config_name="config", overrides=overrides)
    except AssertionError:
        options = " | ".join(mode.value for mode in ClusterMode)
        return (
            f"{', '.join(keys)} sets a key of topology.preprocess_cluster, which is unset: choose its cluster first "
            f"with +cluster@topology.preprocess_cluster=OPTION (OPTION: {options}), "
            "e.g. +cluster@topology.preprocess_cluster=local_cluster topology.preprocess_cluster.workers=2"
        )
    except Exception:  # any other composition error: Hydra reports it with its own message
        return None
    finally:
        GlobalHydra.instance().clear()
    return None


def require_composable(argv: Sequence[str]) -> None:
    """Stop with one line naming the missing override, before Hydra prints a bare AssertionError."""
    why = missing_preprocess_cluster(argv)
    if why is not None:
        print(f"error: {why}", file=sys.stderr, flush=True)
        raise SystemExit(2)
