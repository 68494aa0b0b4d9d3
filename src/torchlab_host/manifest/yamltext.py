"""YAML as the generated files are written (compose.yaml, the Zero to JupyterHub profiles):
block mappings and sequences, flow lists of scalars, quoted strings where plain ones would be
read otherwise, comments, anchors and aliases, tags. Standard library only, like the host tools."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./-]*")
READ_OTHERWISE = re.compile(r"(?i)true|false|yes|no|on|off|null|~|[-+]?[0-9.]+(e[-+]?[0-9]+)?")


@dataclass(frozen=True)
class Alias:
    """*name: the value of the block anchored as &name."""

    name: str


@dataclass(frozen=True)
class Anchored:
    """A block given an anchor (&name) that aliases refer to."""

    name: str
    value: dict[str, Any]


@dataclass(frozen=True)
class Spaced:
    """A mapping whose entries are set apart by blank lines (compose's services)."""

    value: dict[Any, Any]


@dataclass(frozen=True)
class Tagged:
    """A scalar with a YAML tag: compose's !reset null drops what the file before it set."""

    tag: str
    value: Any


@dataclass(frozen=True)
class Comment:
    """A key that writes comment lines in its place (its value is ignored)."""

    text: str


def scalar(value: Any) -> str:
    if isinstance(value, Alias):
        return f"*{value.name}"
    if isinstance(value, Tagged):
        return f"{value.tag} {'null' if value.value is None else scalar(value.value)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if PLAIN.fullmatch(text) and not READ_OTHERWISE.fullmatch(text):
        return text
    return json.dumps(text)


def is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list | Anchored | Spaced)


def lines(data: Any, indent: int = 0) -> list[str]:
    """A mapping's lines at an indent."""
    pad = " " * indent
    out = []
    for key, value in data.items():
        if isinstance(key, Comment):
            out += [f"{pad}# {line}".rstrip() for line in key.text.splitlines()]
            continue
        name = key if key == "<<" else scalar(key)
        if isinstance(value, Anchored):
            out += [f"{pad}{name}: &{value.name}", *lines(value.value, indent + 2)]
        elif isinstance(value, Spaced):
            blocks = entry_blocks(value.value, indent + 2)
            out += [f"{pad}{name}:", *"\n\n".join("\n".join(b) for b in blocks).split("\n")]
        elif isinstance(value, dict) and value:
            out += [f"{pad}{name}:", *lines(value, indent + 2)]
        elif isinstance(value, list) and value and not all(map(is_scalar, value)):
            out += [f"{pad}{name}:", *sequence(value, indent + 2)]
        else:
            out.append(f"{pad}{name}: {inline(value)}")
    return out


def sequence(items: list[Any], indent: int) -> list[str]:
    pad = " " * indent
    out = []
    for item in items:
        if isinstance(item, dict):
            first, *rest = lines(item, indent + 2)
            out += [f"{pad}- {first.lstrip()}", *rest]
        else:
            out.append(f"{pad}- {inline(item)}")
    return out


def inline(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(inline(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar(k)}: {inline(v)}" for k, v in value.items()) + "}"
    return scalar(value)


def entry_blocks(data: dict[Any, Any], indent: int) -> list[list[str]]:
    """Each entry's lines, the comments before an entry kept with it."""
    blocks, pending = [], []
    for key, value in data.items():
        block = lines({key: value}, indent)
        if isinstance(key, Comment):
            pending += block
            continue
        blocks.append(pending + block)
        pending = []
    return [*blocks, pending] if pending else blocks


def dump(data: dict[Any, Any]) -> str:
    """A document: its top-level entries set apart by blank lines."""
    return "\n\n".join("\n".join(block) for block in entry_blocks(data, 0)) + "\n"
