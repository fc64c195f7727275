"""JSON through the C accelerator `_json`, without the `json` package: for tf-agent, and the
shared token-file reader it uses.

Importing `json` compiles regular expressions, which brings `re` and `enum` (and with them
collections, functools and more): ~5 ms of CPU at every agent start, paid by hundreds of
agents at once on a cold `tf-fleet up` (bench/). The work is done by `_json` either way;
this module calls it as `json` does for its defaults (compact separators, ASCII output,
circular check, NaN allowed). A Python without `_json`, or one whose `_json` takes other
arguments, gets the `json` package instead. An error is a ValueError, as with `json`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import IO, Any

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


class _Context:
    """What `_json.make_scanner` reads from json.decoder.JSONDecoder: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def _c_dumps(value: Any) -> str:
    encode = _make_encoder({}, _not_serializable, _escape, None, ": ", ", ", False, False, True)
    return "".join(encode(value, 0))


def _c_loads(text: str | bytes) -> Any:
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"Expecting value: char {stop.value}") from None
    except SystemError:
        # `_json` reports a malformed string through json.decoder's JSONDecodeError, which
        # it looks up among loaded modules only; `json` raises that error for the same text.
        import json

        return json.loads(text)
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


try:
    from _json import encode_basestring_ascii as _escape
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner

    # It reads these attributes of a JSONDecoder (typeshed types the argument as one).
    _scan = _make_scanner(_Context())  # type: ignore[arg-type]
    _sample = {"a": [1, 2.5, None, True]}
    if _c_dumps(_sample) != '{"a": [1, 2.5, null, true]}' or _c_loads(_c_dumps(_sample)) != _sample:
        raise ImportError("_json behaves differently")
    dumps, loads = _c_dumps, _c_loads
except (ImportError, TypeError, ValueError, AttributeError):  # pragma: no cover - CPython has it
    import json

    dumps, loads = json.dumps, json.loads  # type: ignore[assignment]


def load(fh: IO[str]) -> Any:
    return loads(fh.read())


def formatted(value: Any, **options: Any) -> str:
    """`json.dumps` with options (indent, sort_keys): the `json` package, imported only by
    the commands that write such JSON."""
    import json

    return json.dumps(value, **options)


def dump(value: Any, fh: IO[str]) -> None:
    fh.write(dumps(value))
