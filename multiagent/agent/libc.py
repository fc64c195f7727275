"""The few libc functions tf-agent calls, through `_ctypes`, the C module under `ctypes`.

Importing the `ctypes` package builds its types and checks their sizes: measured on one
interpreter, `python -S -c "import ctypes"` takes 22.3 ms of CPU, `import _ctypes` alone
15.8 ms, and `pass` 14.5 ms (median of 40 each), and the package keeps ~0.3 MB more in
every process. tf-agent calls three functions (inotify_init1, inotify_add_watch,
malloc_trim) and hundreds of agents start at once on a cold `tf-fleet up`, so the C types
of their arguments are declared here, as `ctypes` declares them. Anything missing (a
Python without `_ctypes`, a libc without the function) is an OSError: not available.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up time; only annotations need it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# C types by their struct codes, as `ctypes` declares c_int, c_uint, c_ulong, c_char_p.
INT, UINT32, SIZE_T, CHAR_P = "i", "I", "L", "z"  # uint32 and size_t on Linux

_types: dict[str, Any] = {}  # the C types made so far, by code
_library: tuple[Any, Any] | None = None  # (this process's handle, the function type)


def function(name: str, restype: str, *argtypes: str) -> Callable[..., Any]:
    """libc's `name` (result and arguments by the codes above), keeping errno for errno()."""
    try:
        import _ctypes

        handle, function_type = _library or _open(_ctypes)
        found = function_type(_ctypes.dlsym(handle, name))
        found.restype = _ctype(restype)
        found.argtypes = tuple(_ctype(code) for code in argtypes)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise OSError(f"libc {name}: {exc}") from exc
    return found


def errno() -> int:
    """errno as the last call through function() left it."""
    import _ctypes

    return _ctypes.get_errno()


def _open(_ctypes: Any) -> tuple[Any, Any]:
    global _library
    function_type = type(
        "LibcFunction",
        (_ctypes.CFuncPtr,),
        {
            "_flags_": _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO,
            "_restype_": _ctype(INT),
        },
    )
    # None: this process (dlopen(NULL)), which has libc loaded already.
    _library = (_ctypes.dlopen(None), function_type)
    return _library


def _ctype(code: str) -> Any:
    made = _types.get(code)
    if made is None:
        import _ctypes

        made = _types[code] = type(f"c_{code}", (_ctypes._SimpleCData,), {"_type_": code})
    return made
