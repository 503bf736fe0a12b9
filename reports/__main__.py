"""`python -m reports DIR [DIR ...] [--microbenchmark FILE]`: rebuild results.csv and report.html.

Reads every result.json under the DIRs (recursively; several sweeps may be reported together) and writes
both files into the first DIR, so `python -m reports multirun/DATE/TIME` refreshes a sweep's own report.
Exit status 2, with a message, for no DIR or a DIR that does not exist.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reports import peers
from reports.build import build

USAGE = (
    "usage: python -m reports DIR [DIR ...] [--microbenchmark FILE]\n"
    "  rebuilds results.csv and report.html from every result.json under the DIRs, written into the first DIR"
)


def main(argv: list[str]) -> int:
    arguments = list(argv)
    microbenchmark = None
    if "--microbenchmark" in arguments:
        at = arguments.index("--microbenchmark")
        if at + 1 >= len(arguments):
            print(USAGE, file=sys.stderr)
            return 2
        microbenchmark = Path(arguments.pop(at + 1))
        arguments.pop(at)
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
    csv_path, html_path = build(directories, directories[0], microbenchmark)
    for line in peers.summary(directories):
        print(line)
    print(csv_path)
    print(html_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
