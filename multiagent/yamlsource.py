"""Read YAML keeping the line of every key, and catch duplicate keys.

PyYAML keeps the last of two equal keys without a word; a fleet file with an agent
written twice would silently lose one. Walking the composed node tree lets us report
duplicates and point every later error at a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[Any, ...]


@dataclass
class Located:
    """A YAML document's value plus the line (1-based) of each key path."""

    value: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    duplicates: list[tuple[Path_, int, int]] = field(default_factory=list)

    def line(self, path: Path_) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


class YamlSyntaxError(ValueError):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


def load_located(text: str) -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlSyntaxError(line, f"YAML syntax error: {problem}") from exc
    located = Located(value=None)
    if node is None:
        return located
    constructor = yaml.SafeLoader("")
    located.lines[()] = node.start_mark.line + 1
    located.value = _walk(node, (), located, constructor)
    return located


def _walk(node: yaml.Node, path: Path_, out: Located, constructor: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        direct_keys = {id(k) for k, _ in node.value}
        constructor.flatten_mapping(node)  # applies `<<` merge keys
        result: dict[Any, Any] = {}
        first_line: dict[Any, tuple[int, bool]] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                key = str(key)
            line = key_node.start_mark.line + 1
            is_direct = id(key_node) in direct_keys
            if key in first_line and first_line[key][1] and is_direct:
                out.duplicates.append((path + (key,), first_line[key][0], line))
            if not is_direct and key in first_line:
                continue  # an explicit key wins over a merged one
            first_line[key] = (line, is_direct)
            out.lines[path + (key,)] = line
            result[key] = _walk(value_node, path + (key,), out, constructor)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            out.lines[path + (index,)] = item.start_mark.line + 1
            items.append(_walk(item, path + (index,), out, constructor))
        return items
    return constructor.construct_object(node, deep=True)
