"""The configuration reference (docs/configuration.md), written from the config itself so the two cannot drift:
every group of conf/, each option and each key it takes with its type, default, allowed values and meaning; the
top-level keys; the named sweeps of sweeps/ and what each runs.

    python -m pipeline.config.reference            # rewrite docs/configuration.md
    python -m pipeline.config.reference --check    # exit 1, with a diff, when the page differs from the config

Where each column comes from:
- type and allowed values: the option's schema (`pipeline.config.schema`): the dataclass its YAML names in its
  defaults list (`/schema/GROUP@_here_: OPTION`), else the `Config` field of the group's name, else the schema's
  `<Group>Config`; an Enum's members are the allowed values, `Optional` reads "or null";
- default: the option's YAML as written (an interpolation stays one), else the schema's default;
- meaning: the key's trailing comment in the option's YAML, else its comment in the schema (on its line, or the
  comment lines right above it), else its comment in another option of the group. A comment that only shows the
  override (`cluster.workers=W`) means nothing on its own and is passed over. `missing_meanings` lists the keys
  that have none anywhere: a test requires that list to be empty.
A group whose options are `# @package _global_` is a preset, added with `+GROUP=OPTION`: its rows are the keys it
sets, typed and explained by the schema of the root config. A new key, option, group or sweep needs no change here.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import enum
import inspect
import re
import sys
import types
import typing
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import schema
from pipeline.config.yamlnotes import Notes, read_notes, split_comment
from pipeline.rundir import atomic_write

ROOT = Path(__file__).resolve().parents[2]
PAGE = Path("docs") / "configuration.md"
COMMAND = "python -m pipeline.config.reference"
BARE_HINT = re.compile(r"^\+{0,2}[\w.@]+(=\S+)?$")  # `cluster.workers=W`: the override, no meaning
SCHEMA_ENTRY = re.compile(r"^/schema/(?P<group>\w+)@_here_$")
ROW = ("key", "type", "default", "allowed", "meaning")


@dataclass(frozen=True)
class Key:
    """One row of a table: a key as the command line names it, and its columns."""

    path: str
    type: str
    default: str
    allowed: str
    meaning: str


@dataclass(frozen=True)
class Option:
    group: str
    name: str
    description: tuple[str, ...]  # the YAML's header lines
    keys: tuple[Key, ...]
    selects: tuple[str, ...] = ()  # a preset's defaults: `cluster=local_cluster`, ...
    includes: str | None = None  # an option that is another option of its group (device=accelerator)
    tables: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = ()  # (key, columns, rows)


@dataclass(frozen=True)
class Group:
    name: str
    default: str | None  # the option config.yaml's defaults list picks; None: added with +GROUP=OPTION
    meaning: str  # config.yaml's comment on its defaults entry
    kind: str  # "run": composed into a run's config; "preset": `# @package _global_`; "catalogue": read by name
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Sweep:
    name: str
    description: tuple[str, ...]  # the header's lines, commands (indented lines) kept apart
    params: tuple[tuple[str, tuple[str, ...]], ...]  # the matrix: key and its values
    fixed: tuple[str, ...]  # overrides every job of the sweep has


@dataclass(frozen=True)
class Reference:
    top: tuple[Key, ...]
    groups: tuple[Group, ...]
    sweeps: tuple[Sweep, ...]


# ----------------------------------------------------------------------------------------------------- the schema


@cache
def _source_notes(module_name: str) -> dict[str, dict[str, str]]:
    """class name -> field -> its comment in the module's source (trailing, else the comment lines above it)."""
    source = inspect.getsource(sys.modules[module_name])
    lines = source.splitlines()
    found: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        notes = found.setdefault(node.name, {})
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            trailing = [_trailing(lines[number - 1]) for number in range(item.lineno, item.end_lineno + 1)]
            comment = next((text for text in trailing if text), None)
            if comment is None:
                above: list[str] = []
                number = item.lineno - 2
                while number >= 0 and lines[number].strip().startswith("#"):
                    above.insert(0, lines[number].strip().lstrip("#").strip())
                    number -= 1
                comment = " ".join(above) or None
            if comment:
                notes[item.target.id] = comment
    return found


def _trailing(line: str) -> str | None:
    comment = split_comment(line)[1]
    return comment.strip() if comment is not None and not line.strip().startswith("#") else None


def schema_meaning(cls: type, name: str) -> str | None:
    """A field's comment in the schema, from the class of `cls`'s MRO that declares it, nearest first."""
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass):
            comment = _source_notes(klass.__module__).get(klass.__name__, {}).get(name)
            if comment:
                return comment
    return None


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _group_of_type(hint: Any) -> str | None:
    """The group whose options `hint` (a dataclass) is the base schema of: ClusterConfig -> cluster."""
    for name, declared in typing.get_type_hints(schema.Config).items():
        if _unwrap_optional(declared)[0] is hint and name in _groups_on_disk():
            return name
    return None


def type_text(hint: Any) -> tuple[str, str]:
    """A field's type as the page writes it, and its allowed values (an Enum's members), e.g. ("int or null", "")."""
    inner, optional = _unwrap_optional(hint)
    allowed = ""
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        text, allowed = "enum", ", ".join(member.value for member in inner)
    elif origin is list:
        text = f"list of {_element(args[0])}"
    elif origin is dict:
        text = f"map of {_element(args[0])} to {_element(args[1])}"
    elif dataclasses.is_dataclass(inner):
        group = _group_of_type(inner)
        text = f"a {group} option" if group else "mapping"
    elif isinstance(inner, type):
        text = inner.__name__
    else:
        text = str(inner)
    return (f"{text} or null" if optional else text), allowed


def _element(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "{" + ", ".join(field.name for field in dataclasses.fields(hint)) + "}"
    return type_text(hint)[0]


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return "???"


def flow(value: Any) -> str:
    """A value as a YAML flow scalar or collection, the way an override would write it."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return flow(dataclasses.asdict(value))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    return str(value)


# ----------------------------------------------------------------------------------------------------- the YAML


@cache
def _groups_on_disk() -> tuple[str, ...]:
    conf = ROOT / "conf"
    return tuple(sorted(path.name for path in conf.iterdir() if path.is_dir() and any(path.glob("*.yaml"))))


@dataclass(frozen=True)
class _File:
    data: dict[str, Any]
    notes: Notes
    preset: bool


@cache
def _read(path: Path) -> _File:
    text = path.read_text()
    return _File(yaml.safe_load(text) or {}, read_notes(text), _is_preset(text))


def _is_preset(text: str) -> bool:
    """`# @package _global_` among the comment lines the file opens with: its keys are the root config's."""
    for line in text.splitlines():
        if not line.startswith("#"):
            return False
        if line.lstrip("# ").startswith("@package _global_"):
            return True
    return False


def _meaningful(comment: str | None) -> str | None:
    return None if comment is None or BARE_HINT.match(comment) else comment


def _flatten(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    rows = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, (*prefix, str(key)))
        else:
            rows.append(((*prefix, str(key)), value))
    return rows


def _schema_of_option(group: str, defaults: list[Any]) -> type | None:
    for entry in defaults:
        if isinstance(entry, dict):
            for key, option in entry.items():
                match = SCHEMA_ENTRY.match(str(key))
                if match:
                    return schema.OPTION_SCHEMAS[match["group"]][1][option]
    hints = typing.get_type_hints(schema.Config)
    if group in hints:
        inner, _ = _unwrap_optional(hints[group])
        return inner if dataclasses.is_dataclass(inner) else None
    camel = "".join(part.title() for part in group.split("_")) + "Config"
    found = getattr(schema, camel, None)
    return found if dataclasses.is_dataclass(found) else None


def _sibling_meaning(group: str | None, path: tuple[str, ...]) -> str | None:
    """The first comment on `path` in the options of `group`, in name order (a key every option shares is
    explained once, in whichever option says most)."""
    if group is None or not (ROOT / "conf" / group).is_dir():
        return None
    for path_file in sorted((ROOT / "conf" / group).glob("*.yaml")):
        comment = _meaningful(_read(path_file).notes.meaning(path))
        if comment:
            return comment
    return None


@dataclass(frozen=True)
class _Where:
    """Where a key's comments may be: its own file at `at`, and the options of `group` at `in_group`."""

    notes: Notes | None
    at: tuple[str, ...]
    group: str | None
    in_group: tuple[str, ...]
    option: str | None = None  # the option whose file `notes` are

    def child(self, name: str) -> _Where:
        return _Where(self.notes, (*self.at, name), self.group, (*self.in_group, name), self.option)

    def meaning(self, cls: type | None, name: str, value: Any = None) -> str:
        own = _meaningful(self.notes.meaning((*self.at, name))) if self.notes else None
        return (
            own
            or (schema_meaning(cls, name) if cls is not None else None)
            or _sibling_meaning(self.group, (*self.in_group, name))
            or _meaningful(_read(ROOT / "conf" / "config.yaml").notes.meaning((*self.at, name)))
            or self._names_the_option(value)
            or ""
        )

    def _names_the_option(self, value: Any) -> str | None:
        """The field that names the option (`udf.style`, `model.name`): an Enum whose value is the option's."""
        if isinstance(value, enum.Enum) and self.option is not None and value.value == self.option:
            return f"the option itself ({self.group}={self.option} sets it)"
        return None


def _rows(cls: type, values: dict[str, Any], where: _Where, prefix: str) -> list[Key]:
    """The rows of every field of `cls`: the option's value where it sets one, else the schema's default. A
    nested record (`preprocess`) gives its fields' rows; a list or map of records (`cluster.nodes`,
    `cost.prices`) its own row, then its records' fields (`cluster.nodes[].role`)."""
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        inner, _ = _unwrap_optional(hint)
        args = typing.get_args(inner)
        value = values.get(field.name, _default(field))
        path = f"{prefix}.{field.name}" if prefix else field.name
        if dataclasses.is_dataclass(inner) and not _group_of_type(inner):
            nested = value if isinstance(value, dict) else {}
            rows += _rows(inner, nested, where.child(field.name), path)
            continue
        kind, allowed = type_text(hint)
        if typing.get_origin(inner) is dict and args and dataclasses.is_dataclass(args[1]):
            shown, element = (f"({len(value)} entries, below)" if value else "{}"), (args[1], f"{path}.NAME")
        elif typing.get_origin(inner) is list and args and dataclasses.is_dataclass(args[0]):
            shown, element = flow(value), (args[0], f"{path}[]")
        else:
            shown, element = flow(value), None
        typed = _enum_value(inner, value)
        rows.append(Key(path, kind, shown, allowed, where.meaning(cls, field.name, typed)))
        if element:
            inside = _Where(None, (), where.group, (*where.in_group, field.name))
            rows += [replace(row, default="") for row in _rows(element[0], {}, inside, element[1])]
    return rows


def _enum_value(hint: Any, value: Any) -> Any:
    """`value` as a member of the Enum `hint` when it names one; else `value`."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and not isinstance(value, enum.Enum):
        return next((member for member in hint if member.value == value), value)
    return value


def _tables(
    cls: type, values: dict[str, Any], prefix: str
) -> list[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]]]:
    """A sub-table for each map of records an option fills (cost.prices: one row per entry)."""
    tables = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        inner, _ = _unwrap_optional(hints[field.name])
        args = typing.get_args(inner)
        value = values.get(field.name)
        if typing.get_origin(inner) is dict and args and dataclasses.is_dataclass(args[1]) and value:
            columns = tuple(item.name for item in dataclasses.fields(args[1]))
            rows = tuple(
                (str(name), *(flow((entry or {}).get(column, "")) for column in columns))
                for name, entry in value.items()
            )
            tables.append((f"{prefix}.{field.name}", ("name", *columns), rows))
    return tables


def _selected(defaults: list[Any]) -> dict[str, str]:
    """A defaults list's group choices: {"cluster": "local_cluster", "cluster@topology.preprocess_cluster": ...}."""
    return {
        str(key).removeprefix("override ").lstrip("/"): str(option)
        for entry in defaults
        if isinstance(entry, dict)
        for key, option in entry.items()
    }


def _preset_rows(data: dict[str, Any], notes: Notes) -> list[Key]:
    """A preset's keys, each typed and explained as the root config's key it sets."""
    selected = _selected(data.get("defaults") or [])
    rows = []
    for path, value in _flatten({key: item for key, item in data.items() if key != "defaults"}):
        cls, hint, where = _root_field(path, selected, notes)
        kind, allowed = type_text(hint) if hint is not None else ("", "")
        meaning = where.meaning(cls, path[-1]) if where else _meaningful(notes.meaning(path)) or ""
        rows.append(Key(".".join(path), kind, flow(value), allowed, meaning))
    return rows


def _root_field(
    path: tuple[str, ...], selected: dict[str, str], notes: Notes
) -> tuple[type | None, Any, _Where | None]:
    """The class declaring a dotted key of the root config, its type hint and where its comments are. A group's
    keys are looked up in the option the preset selects for it, else in the first of its options that has the
    key; a key under a group-typed field (`topology.preprocess_cluster.workers`) in that group's options."""
    cls: type = schema.Config
    group, start = None, 0
    for depth, name in enumerate(path):
        candidates = [cls]
        if group is not None and depth == start and group in schema.OPTION_SCHEMAS:
            options = schema.OPTION_SCHEMAS[group][1]
            chosen = selected.get(group if start == 1 else f"{group}@{'.'.join(path[:start])}")
            candidates = [options[chosen]] if chosen in options else list(options.values())
        declaring = next((item for item in candidates if name in typing.get_type_hints(item)), None)
        if declaring is None:
            return None, None, None
        hint = typing.get_type_hints(declaring)[name]
        if depth == len(path) - 1:
            where = _Where(notes, path[:-1], group, path[start:-1])
            return declaring, hint, where
        inner, _ = _unwrap_optional(hint)
        if not dataclasses.is_dataclass(inner):
            return None, None, None
        owner = _group_of_type(inner) or (name if depth == 0 and name in _groups_on_disk() else None)
        if owner is not None:
            group, start = owner, depth + 1
        cls = inner
    return None, None, None


def _description(notes: Notes) -> tuple[str, ...]:
    return tuple(notes.header)


def _option(group: str, path: Path) -> Option:
    file = _read(path)
    defaults = file.data.get("defaults") or []
    includes = next((entry for entry in defaults if isinstance(entry, str)), None)
    if file.preset:
        selects = tuple(f"{key}={option}" for key, option in _selected(defaults).items())
        return Option(group, path.stem, _description(file.notes), tuple(_preset_rows(file.data, file.notes)), selects)
    values = {key: value for key, value in file.data.items() if key != "defaults"}
    notes = file.notes
    if includes:  # an option that is another option of its group, as device=accelerator is t4_fp16
        other = _read(path.parent / f"{includes}.yaml")
        values, notes = {**other.data, **values}, other.notes
    cls = _schema_of_option(group, defaults)
    if cls is None:
        keys = tuple(
            Key(f"{group}.{'.'.join(k)}", "", flow(v), "", _meaningful(notes.meaning(k)) or "")
            for k, v in _flatten(values)
        )
        return Option(group, path.stem, _description(file.notes), keys, includes=includes)
    keys = tuple(_rows(cls, values, _Where(notes, (), group, (), path.stem), group))
    return Option(
        group, path.stem, _description(file.notes), keys, includes=includes, tables=tuple(_tables(cls, values, group))
    )


def groups() -> list[Group]:
    config = _read(ROOT / "conf" / "config.yaml")
    chosen = {
        key: option
        for entry in config.data.get("defaults") or []
        if isinstance(entry, dict)
        for key, option in entry.items()
    }
    hints = typing.get_type_hints(schema.Config)
    found = []
    for name in _groups_on_disk():
        options = tuple(_option(name, path) for path in sorted((ROOT / "conf" / name).glob("*.yaml")))
        if name in hints:
            kind = "run"
        elif all(_read(ROOT / "conf" / name / f"{option.name}.yaml").preset for option in options):
            kind = "preset"
        else:
            kind = "catalogue"
        default = chosen.get(name)
        found.append(
            Group(name, None if default is None else flow(default), config.notes.defaults.get(name, ""), kind, options)
        )
    return found


def top_level() -> list[Key]:
    """The keys of the root config that are not groups: config.yaml's values, the schema's types."""
    config = _read(ROOT / "conf" / "config.yaml")
    values = {key: value for key, value in config.data.items() if key not in ("defaults", "hydra")}
    on_disk = set(_groups_on_disk())
    rows = _rows(schema.Config, values, _Where(config.notes, (), None, ()), "")
    rows = [row for row in rows if row.path.split(".")[0].split("[")[0] not in on_disk]
    return sorted(rows, key=lambda row: "." in row.path)  # the run's own keys first, then preprocess.*, gpu.*, ...


def sweeps() -> list[Sweep]:
    found = []
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        file = _read(path)
        params = ((file.data.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
        matrix = tuple((str(key), tuple(str(value).split(","))) for key, value in params.items())
        fixed = [f"{key}={option}" for key, option in _selected(file.data.get("defaults") or []).items()]
        body = {key: value for key, value in file.data.items() if key not in ("defaults", "hydra")}
        fixed += [f"{'.'.join(key)}={flow(value)}" for key, value in _flatten(body)]
        found.append(Sweep(path.stem, tuple(file.notes.header), matrix, tuple(fixed)))
    return found


def reference() -> Reference:
    return Reference(tuple(top_level()), tuple(groups()), tuple(sweeps()))


def missing_meanings(found: Reference | None = None) -> list[str]:
    """Every key with no meaning in its option's YAML, the schema or a sibling option: "group=option: key"."""
    found = found or reference()
    missing = [f"top level: {key.path}" for key in found.top if not key.meaning]
    for group in found.groups:
        for option in group.options:
            missing += [f"{group.name}={option.name}: {key.path}" for key in option.keys if not key.meaning]
    return missing


# ----------------------------------------------------------------------------------------------------- the page


def _cell(text: str, code: bool = False) -> str:
    """A table cell: `|` escaped; code in backticks, prose with `<` escaped (`<run dir>` is no HTML tag)."""
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if code and text else _prose(text)


def _prose(text: str) -> str:
    """`<` escaped outside code spans, so that `<run dir>` in prose is no HTML tag."""
    parts = text.split("`")
    return "`".join(part if odd else part.replace("<", "\\<") for odd, part in zip([0, 1] * len(parts), parts))


def _table(keys: tuple[Key, ...] | list[Key]) -> list[str]:
    lines = ["| key | type | default | allowed values | meaning |", "|---|---|---|---|---|"]
    for key in keys:
        lines.append(
            f"| {_cell(key.path, True)} | {_cell(key.type)} | {_cell(key.default, not key.default.startswith('('))} | "
            f"{_cell(key.allowed)} | "
            f"{_cell(key.meaning)} |"
        )
    return lines


def _preset_table(keys: tuple[Key, ...]) -> list[str]:
    lines = ["| key | sets | type | meaning |", "|---|---|---|---|"]
    for key in keys:
        lines.append(
            f"| {_cell(key.path, True)} | {_cell(key.default, True)} | {_cell(key.type)} | {_cell(key.meaning)} |"
        )
    return lines


def _header_lines(lines: tuple[str, ...] | list[str]) -> list[str]:
    """A YAML header as Markdown: its prose lines joined into paragraphs, its indented lines (commands) as code
    blocks, dedented together."""
    out: list[str] = []
    block: list[str] = []
    code = False
    for line in [*lines, ""]:
        indented = line.startswith("  ")
        if block and (indented != code or not line.strip()):
            if code:
                margin = min(len(item) - len(item.lstrip()) for item in block)
                out += ["```bash", *(item[margin:] for item in block), "```", ""]
            else:
                out += [_prose(" ".join(item.strip() for item in block)), ""]
            block = []
        if line.strip():
            block.append(line)
            code = indented
    return out


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", text.lower()).replace(" ", "-")


def render(found: Reference | None = None) -> str:
    found = found or reference()
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` from conf/, sweeps/ and pipeline/config/schema.py. Do not edit: change the",
        "YAML or the schema and regenerate; tests/test_docs.py fails when this page differs. -->",
        "",
        "A run composes one option of each group below (`python -m pipeline GROUP=OPTION`) and any key can be set on",
        "the command line (`python -m pipeline dataset.num_images=256 model.batch_size=16`). Types and allowed",
        "values are the schema's (`pipeline/config/schema.py`): a misspelt key, a wrong type or a value outside the",
        "allowed ones fails before anything runs, naming the key. The default is the option's YAML (`conf/GROUP/",
        "OPTION.yaml`) as written, else the schema's; `???` must be given. Presets are added with `+GROUP=OPTION`",
        "and set the keys listed; named sweeps run with `sweep=NAME`.",
        "",
        "- [Top-level keys](#top-level-keys)",
        "- Groups: " + " · ".join(f"[{group.name}](#{_anchor(group.name)})" for group in found.groups),
        "- [Named sweeps](#named-sweeps)",
        "",
        "## Top-level keys",
        "",
        *_table(found.top),
        "",
    ]
    for group in found.groups:
        lines += [f"## {group.name}", ""]
        options = ", ".join(f"`{option.name}`" for option in group.options)
        if group.kind == "run":
            intro = f"`{group.name}=OPTION`, default `{group.default}`."
        elif group.kind == "preset":
            intro = f"A preset: `+{group.name}=OPTION` sets the keys it lists (not in a run by default)."
        else:
            intro = f"A catalogue read by name (`{group.name}=NAME` where a command takes one), not a run's config."
        lines += [f"{intro} Options: {options}.", ""]
        if group.meaning:
            lines += [f"{group.meaning}", ""]
        used = [sweep.name for sweep in found.sweeps if any(key.lstrip("+") == group.name for key, _ in sweep.params)]
        if used:
            lines += ["Swept by " + ", ".join(f"`sweep={name}`" for name in used) + ".", ""]
        for option in group.options:
            lines += [f"### {group.name}={option.name}", ""]
            lines += _header_lines(option.description)
            if option.includes:
                lines += [f"The same as `{group.name}={option.includes}`.", ""]
            if option.selects:
                lines += ["Selects " + ", ".join(f"`{item}`" for item in option.selects) + ".", ""]
            if option.keys:
                lines += [*(_preset_table(option.keys) if group.kind == "preset" else _table(option.keys)), ""]
            for key, columns, rows in option.tables:
                lines += [f"`{key}`:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
                lines.append("")
    lines += [
        "## Named sweeps",
        "",
        "`python -m pipeline sweep=NAME` runs every job of the matrix below; any axis or key can",
        "be overridden on the same command line (`sweep=peers dataset.num_images=1024`).",
        "",
    ]
    for sweep in found.sweeps:
        lines += [f"### sweep={sweep.name}", "", *_header_lines(sweep.description)]
        jobs = 1
        for _, values in sweep.params:
            jobs *= len(values)
        axes = " × ".join(f"`{key}` ({len(values)}: {', '.join(values)})" for key, values in sweep.params)
        lines += [f"Runs {jobs} jobs: {axes}." if sweep.params else "Runs one job.", ""]
        if sweep.fixed:
            lines += ["Every job: " + ", ".join(f"`{item}`" for item in sweep.fixed) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def drift(path: Path, expected: str) -> str | None:
    """A diff of the checked-in page at `path` against `expected` (the first 60 lines); None when they are equal."""
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    if current == expected:
        return None
    diff = difflib.unified_diff(
        current.splitlines(), expected.splitlines(), f"{path} (checked in)", f"{path} (generated)", lineterm="", n=1
    )
    shown = list(diff)
    more = f"\n... {len(shown) - 60} more diff lines" if len(shown) > 60 else ""
    return "\n".join(shown[:60]) + more


def publish(path: Path, text: str, check: bool, command: str) -> int:
    """A generated page's two commands: write `text` to `path` (whole or absent), or with `check` compare them
    and exit 1 with the diff and the `command` that rewrites the page. Shared by every page made from its
    sources (this one, `reports.findings`)."""
    if check:
        difference = drift(path, text)
        if difference:
            print(f"{difference}\n{path} is out of date: run `{command}`", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    print(atomic_write(path, text))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Write the configuration reference from the config.")
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from what would be written")
    parser.add_argument("--output", type=Path, default=ROOT / PAGE, help=f"the page (default: {PAGE})")
    arguments = parser.parse_args(argv)
    found = reference()
    for line in missing_meanings(found):
        print(f"no meaning: {line}", file=sys.stderr)
    return publish(arguments.output, render(found), arguments.check, COMMAND)


if __name__ == "__main__":
    sys.exit(main())
