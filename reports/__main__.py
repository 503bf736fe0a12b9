"""`python -m reports DIR [DIR ...] [--microbenchmark FILE] [--project instance=NAME [--nodes N] [--device NAME]]`:
rebuild results.csv and report.html; `python -m reports --original-table [DIR ...] [--original-costs FILE]`: the
original study's table against our projection (`reports.original`), from the rates under the DIRs (defaults without
any) and the original's own costs in FILE (`python -m tests.bench.original_costs --out FILE`; the figures it
measured here without);
`python -m reports advise --rates FILE ...`: the variants ranked for a calibrated cluster (`reports.advise`).

Reads every result.json under the DIRs (recursively; several sweeps may be reported together) and writes
both files into the first DIR, so `python -m reports multirun/DATE/TIME` refreshes a sweep's own report.
Exit status 2, with a message, for no DIR or a DIR that does not exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config.schema import ConfigError
from reports import original
from reports.build import build, summaries
from reports.projection import lines, project_dirs

USAGE = (
    "usage: python -m reports DIR [DIR ...] [--microbenchmark FILE] [--project instance=NAME [--nodes N] [--device D]]"
    "\n"
    "       python -m reports --original-table [DIR ...] [--original-costs FILE]\n"
    "       python -m reports advise --rates FILE [--images N] [--objective throughput|cost]"
    " [--instance NAME --nodes N]"
    " [--verify K]\n"
    "  rebuilds results.csv and report.html from every result.json under the DIRs, written into the first DIR;\n"
    "  --project adds throughput and cost projected onto N instances (conf/instance/); --original-table prints the\n"
    "  original study's table beside our projection"
)


def _option(arguments: list[str], name: str) -> str | None:
    """Remove `name VALUE` from `arguments` and return VALUE; None when absent; ValueError without a value."""
    if name not in arguments:
        return None
    at = arguments.index(name)
    if at + 1 >= len(arguments):
        raise ValueError(name)
    value = arguments.pop(at + 1)
    arguments.pop(at)
    return value


def main(argv: list[str]) -> int:
    if argv[:1] == ["advise"]:  # python -m reports advise --rates FILE ...: reports.advise
        from reports import advise

        return advise.main(argv[1:])
    arguments = list(argv)
    microbenchmark = None
    table = "--original-table" in arguments
    if table:
        arguments.remove("--original-table")
    try:
        microbenchmark_value = _option(arguments, "--microbenchmark")
        microbenchmark = Path(microbenchmark_value) if microbenchmark_value else None
        costs_value = _option(arguments, "--original-costs")
        instance, nodes, device = (_option(arguments, key) for key in ("--project", "--nodes", "--device"))
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    for flag, value in (("--nodes", nodes), ("--device", device)):
        if value is not None and instance is None:
            print(f"error: {flag} applies only with --project instance=NAME\n{USAGE}", file=sys.stderr)
            return 2
    if costs_value is not None and not table:
        print(f"error: --original-costs applies only with --original-table\n{USAGE}", file=sys.stderr)
        return 2
    if table and not any(argument.startswith("-") for argument in arguments):
        missing = [argument for argument in arguments if not Path(argument).is_dir()]
        if missing:
            print(f"error: {missing[0]} is not a directory\n{USAGE}", file=sys.stderr)
            return 2
        if costs_value is not None and not Path(costs_value).is_file():
            print(f"error: {costs_value} is not a file\n{USAGE}", file=sys.stderr)
            return 2
        costs = Path(costs_value) if costs_value else None
        print(original.report([Path(argument) for argument in arguments], microbenchmark, costs))
        return 0
    if instance is not None and not instance.startswith("instance="):
        print(f"error: --project takes instance=NAME, not {instance!r}\n{USAGE}", file=sys.stderr)
        return 2
    if nodes is not None and (not nodes.isdigit() or int(nodes) < 1):
        print(f"error: --nodes takes a whole number >= 1, not {nodes!r}\n{USAGE}", file=sys.stderr)
        return 2
    if not arguments or any(argument.startswith("-") for argument in arguments):
        print(USAGE, file=sys.stderr)
        return 2
    directories = [Path(argument) for argument in arguments]
    for path in [*directories, *([microbenchmark] if microbenchmark else [])]:
        if not path.exists():
            print(f"error: {path} does not exist\n{USAGE}", file=sys.stderr)
            return 2
    for directory in directories:
        if not directory.is_dir():
            print(f"error: {directory} is not a directory\n{USAGE}", file=sys.stderr)
            return 2
    projection = None
    if instance is not None:
        try:
            projection = project_dirs(
                directories, instance.removeprefix("instance="), int(nodes or 1), microbenchmark, device
            )
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        for line in lines(projection):
            print(line)
    csv_path, html_path = build(directories, directories[0], microbenchmark, projection)
    for line in summaries(directories):
        print(line)
    print(csv_path)
    print(html_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
