"""Read YAML keeping the line of every key, and catch duplicate keys.

PyYAML keeps the last of two equal keys without a word; a fleet file with an agent
written twice would silently lose one. Walking the composed node tree lets us report
duplicates and point every later error at a line.

A fleet file is also input that must not hurt the host: the loader refuses, each as a
`YamlSyntaxError` with a line, nesting deeper than MAX_DEPTH, aliases that expand past
MAX_EXPANDED values (a "billion laughs" file), an alias inside its own anchor, every
tag but plain YAML values', and complex keys. Nothing is constructed before those
checks pass, and any other exception while reading becomes a YamlSyntaxError too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[Any, ...]

# How deep values may nest (aliases followed), and how many values the file may expand
# to with every alias and merge key (`<<: *base`) followed: far above any real fleet.
MAX_DEPTH = 32
MAX_EXPANDED = 50_000

_YAML = "tag:yaml.org,2002:"
# The tags of plain YAML values, as the resolver gives them (implicitly or as `!!str`...).
ALLOWED_TAGS = frozenset(
    _YAML + name for name in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq")
)
MERGE_TAG = _YAML + "merge"
VALUE_TAG = _YAML + "value"


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


def _events(stream: str) -> Any:
    """The object that parses `stream` into events: libyaml's (a 2 MB file in
    milliseconds, flow nesting bounded), else PyYAML's."""
    if yaml.__with_libyaml__:
        from yaml._yaml import CParser

        return CParser(stream)
    return yaml.SafeLoader(stream)  # pragma: no cover


class _BoundedComposer(yaml.composer.Composer, yaml.resolver.Resolver):
    """PyYAML's composer over parser events, stopping at MAX_DEPTH levels and at
    MAX_EXPANDED nodes: PyYAML composes recursively, one Python call per node."""

    def __init__(self, stream: str):
        self.parser = _events(stream)
        self.check_event = self.parser.check_event
        self.peek_event = self.parser.peek_event
        self.get_event = self.parser.get_event
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.depth = 0
        self.nodes = 0

    def dispose(self) -> None:
        self.parser.dispose()

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        self.nodes += 1
        try:
            if self.depth > MAX_DEPTH or self.nodes > MAX_EXPANDED:
                line = int(self.peek_event().start_mark.line) + 1
                if self.depth > MAX_DEPTH:
                    raise YamlSyntaxError(line, f"values nest deeper than {MAX_DEPTH} levels")
                raise YamlSyntaxError(line, f"the file holds more than {MAX_EXPANDED} values")
            return yaml.composer.Composer.compose_node(self, parent, index)
        finally:
            self.depth -= 1


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _line_of_position(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def load_located(text: str) -> Located:
    if "\0" in text:
        raise YamlSyntaxError(
            _line_of_position(text, text.index("\0")), "a NUL byte is not allowed in YAML"
        )
    try:
        return _load(text)
    except YamlSyntaxError:
        raise
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(
            _error_line(exc, text), f"YAML syntax error: {_problem(exc)}"
        ) from exc
    except RecursionError as exc:
        raise YamlSyntaxError(None, f"values nest deeper than {MAX_DEPTH} levels") from exc
    except Exception as exc:  # a value PyYAML cannot build is still a bad file, not a crash
        raise YamlSyntaxError(None, f"cannot read the YAML: {exc}") from exc


def _error_line(exc: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(exc, "position", None)  # a ReaderError: a character YAML refuses
    return _line_of_position(text, position) if isinstance(position, int) else None


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "?")
        return f"character U+{code:04X} is not allowed"
    return str(getattr(exc, "problem", None) or exc)


def _load(text: str) -> Located:
    loader = _BoundedComposer(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    located = Located(value=None)
    if node is None:
        return located
    _check_graph(node)
    constructor = yaml.SafeLoader("")
    located.lines[()] = _line(node)
    located.value = _walk(node, (), located, constructor)
    return located


def _check_graph(root: yaml.Node) -> None:
    """Refuse, before anything is built, what could exhaust the host or run code: a tag
    that is not a plain value's, a complex key, an alias inside its own anchor, nesting
    past MAX_DEPTH and more than MAX_EXPANDED values once aliases are followed. Each node
    is costed once (memo), so a billion laughs is refused after a few hundred steps."""
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (values expanded, height)
    open_nodes: set[int] = set()

    def cost(node: yaml.Node, depth: int) -> tuple[int, int]:
        known = memo.get(id(node))
        if known is not None:
            if depth + known[1] > MAX_DEPTH:
                raise YamlSyntaxError(_line(node), f"values nest deeper than {MAX_DEPTH} levels")
            return known
        if id(node) in open_nodes:
            raise YamlSyntaxError(_line(node), "an alias refers to the value that contains it")
        if depth > MAX_DEPTH:
            raise YamlSyntaxError(_line(node), f"values nest deeper than {MAX_DEPTH} levels")
        _check_tag(node)
        open_nodes.add(id(node))
        total, height = 1, 0
        for child in _children(node):
            size, child_height = cost(child, depth + 1)
            total += size
            height = max(height, child_height + 1)
            if total > MAX_EXPANDED:
                raise YamlSyntaxError(
                    _line(node),
                    f"the file expands to more than {MAX_EXPANDED} values once its aliases"
                    " and merge keys are followed",
                )
        open_nodes.discard(id(node))
        memo[id(node)] = (total, height)
        return total, height

    cost(root, 0)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        children = []
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise YamlSyntaxError(
                    _line(key), "a key must be a plain value, not a list or mapping"
                )
            children += [key, value]
        return children
    return []


def _check_tag(node: yaml.Node) -> None:
    tag = node.tag
    if tag in ALLOWED_TAGS or (tag in (MERGE_TAG, VALUE_TAG) and isinstance(node, yaml.ScalarNode)):
        return
    raise YamlSyntaxError(
        _line(node), f"the tag {tag!r} is not allowed: a fleet file holds plain YAML values only"
    )


def _walk(node: yaml.Node, path: Path_, out: Located, constructor: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        direct_keys = {id(k) for k, _ in node.value}
        constructor.flatten_mapping(node)  # applies `<<` merge keys
        result: dict[Any, Any] = {}
        first_line: dict[Any, tuple[int, bool]] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            line = _line(key_node)
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
            out.lines[path + (index,)] = _line(item)
            items.append(_walk(item, path + (index,), out, constructor))
        return items
    try:
        return constructor.construct_object(node, deep=True)
    except (ValueError, OverflowError, yaml.YAMLError) as exc:
        shown = repr(node.value) if len(node.value) <= 40 else repr(node.value[:40]) + "..."
        raise YamlSyntaxError(_line(node), f"cannot read the value {shown}: {exc}") from exc
