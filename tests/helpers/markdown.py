"""What the docs' own checks read from Markdown: relative links and the headings they point at (GitHub's anchors),
and the layout page's tree, so a link or a layout that drifted from the repository fails a test instead of a
reader."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(```|~~~)")
COMMENT = re.compile(r"<!--.*?-->", re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
ENTRY = re.compile(r"^(\S+/)\s+(.*)$")


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str  # the path part, "" for a link within the page
    anchor: str | None

    def __str__(self) -> str:
        return f"{self.page.name}:{self.line}: ({self.target}{'#' + self.anchor if self.anchor is not None else ''})"


def _prose(text: str) -> list[tuple[int, str]]:
    """The page's lines outside fenced code blocks and HTML comments, numbered from 1."""
    text = COMMENT.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    lines, fenced = [], False
    for number, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without link targets, lower case, every character but letters,
    digits, spaces, hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return "".join(char for char in text if char.isalnum() or char in " -_").replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a page; a repeated heading gets GitHub's -1, -2, ... suffixes."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[Link]:
    """Every relative link (and image) on a page, outside code; links to other sites and mail are left out."""
    found = []
    for number, line in _prose(page.read_text()):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            target = match.group(1)
            if EXTERNAL.match(target):
                continue
            path, _, anchor = target.partition("#")
            found.append(Link(page, number, path, anchor if "#" in target else None))
    return found


def missing_files(pages: Iterable[Path]) -> list[str]:
    """Links whose file or directory does not exist, relative to the page that holds them."""
    return [str(link) for page in pages for link in links(page) if link.target and not _resolve(link).exists()]


def missing_anchors(pages: Iterable[Path]) -> list[str]:
    """Links whose #anchor names no heading of the Markdown page it points at (the linking page itself when the
    link has no path); links to a missing file are missing_files' to report."""
    broken = []
    for page in pages:
        for link in links(page):
            target = _resolve(link)
            if link.anchor is None or target.suffix != ".md" or not target.is_file():
                continue
            if link.anchor not in anchors(target):
                broken.append(str(link))
    return broken


def _resolve(link: Link) -> Path:
    return (link.page.parent / link.target).resolve() if link.target else link.page


def layout_entries(page: Path) -> dict[str, str]:
    """The layout page's tree (its first code block): each folder's entry (`pipeline/spark/   plan (...) · ...`
    and its indented continuation lines) by folder."""
    text = page.read_text()
    block = re.search(r"^```\n(.*?)^```", text, re.S | re.M)
    assert block, f"{page} has no code block with the tree"
    entries: dict[str, str] = {}
    folder = None
    for line in block.group(1).splitlines():
        match = ENTRY.match(line)
        if match:
            folder = match.group(1)
            entries[folder] = match.group(2)
        elif folder and line.strip():
            entries[folder] += " " + line.strip()
    return entries


def unnamed_in_layout(page: Path, root: Path, packages: Iterable[str]) -> list[str]:
    """Every Python package under `packages` (a folder with __init__.py) the layout has no entry for, and every
    module of one whose name its entry does not mention as a word."""
    entries = layout_entries(page)
    missing = []
    for top in packages:
        for init in sorted((root / top).rglob("__init__.py")):
            folder = init.parent.relative_to(root).as_posix() + "/"
            if folder not in entries:
                missing.append(f"{folder} (no entry)")
                continue
            for module in sorted(init.parent.glob("*.py")):
                if module.stem != "__init__" and not re.search(
                    rf"(?<![\w.]){re.escape(module.stem)}\b", entries[folder]
                ):
                    missing.append(f"{folder}{module.name}")
    return missing
