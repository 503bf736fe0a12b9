"""The comments of a Hydra YAML file, by the key they annotate: what the configuration reference quotes as each
key's meaning (`pipeline.config.reference`).

PyYAML drops comments, and the conventions here are few and regular, so a small line reader does: `key: value  #
meaning` annotates the key at that line's place in the block mapping (a flow mapping's keys, `dataset:
{num_images: 16}  # ...`, share their line's comment); a comment-only line whose `#` stands in the column of the
previous line's comment continues it; comment lines before the first key are the file's header (its
description), `# @package` directives excepted; `- GROUP: OPTION  # ...` in a `defaults` list annotates GROUP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:'\"\-{\[][^:#]*?)\s*:(?:\s+(?P<value>.*))?$")
DEFAULTS_ITEM = re.compile(r"^ *- *(?:override +)?(?P<key>[^\s:#]+)\s*:")


@dataclass
class Notes:
    """What a file's comments say: its header lines, a comment per key path, one per `defaults` entry."""

    header: list[str] = field(default_factory=list)
    keys: dict[tuple[str, ...], str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)

    def meaning(self, path: tuple[str, ...]) -> str | None:
        """The comment on `path`'s line (a flow mapping's keys share their line's); None without one."""
        return self.keys.get(tuple(path))


def split_comment(line: str) -> tuple[str, str | None, int]:
    """`line` without its comment, the comment's text as written after the `#` (None without one) and the
    column of its `#`: a `#` at the start or after a blank, outside quotes, starts a comment."""
    quote = None
    for at, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (at == 0 or line[at - 1] in " \t"):
            return line[:at].rstrip(), line[at + 1 :], at
    return line.rstrip(), None, -1


def _flow_keys(value: str) -> list[tuple[str, ...]]:
    """The key paths inside a flow mapping (`{workers: 1, worker_cores: 8}`); none for anything else."""
    if not value.startswith("{"):
        return []
    try:
        data = yaml.safe_load(value)
    except yaml.YAMLError:
        return []
    paths: list[tuple[str, ...]] = []

    def walk(node: object, prefix: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                paths.append((*prefix, str(key)))
                walk(item, (*prefix, str(key)))

    walk(data, ())
    return paths


def read_notes(text: str) -> Notes:
    """The comments of a YAML file's text (see the module docstring)."""
    notes = Notes()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing block mappings
    seen_key = False
    last: tuple[tuple[str, ...] | str, int] | None = None  # the annotated key path (or defaults entry) and its # column
    in_defaults = False
    for line in text.splitlines():
        body, raw, column = split_comment(line)
        comment = None if raw is None else raw.strip()
        if not body:
            if comment is None:
                last = None
            elif not seen_key:
                if not comment.startswith("@package"):
                    notes.header.append(raw.removeprefix(" ").rstrip())  # indented lines stay indented
            elif last is not None and column == last[1] and comment:
                target, _ = last
                if isinstance(target, str):
                    notes.defaults[target] += " " + comment
                else:
                    notes.keys[target] += " " + comment
            else:
                last = None
            continue
        seen_key = True
        if in_defaults and body.lstrip().startswith("-"):
            item = DEFAULTS_ITEM.match(body)
            if item and comment:
                notes.defaults[item["key"]] = comment
                last = (item["key"], column)
            else:
                last = None
            continue
        match = KEY_LINE.match(body)
        if match is None:  # a list item or a continued value
            last = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(key for _, key in stack), match["key"].strip())
        in_defaults = path == ("defaults",)
        if not match["value"]:
            stack.append((indent, match["key"].strip()))
        if comment:
            notes.keys[path] = comment
            for inner in _flow_keys(match["value"] or ""):
                notes.keys.setdefault((*path, *inner), comment)
            last = (path, column)
        else:
            last = None
    return notes
