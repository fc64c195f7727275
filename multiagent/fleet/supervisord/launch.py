"""The private supervisord, started as `python -m multiagent.fleet.supervisord.launch -c CONF`:
supervisor's own `supervisord`, reading its included files in linear time.

supervisor reads each included file into the parser that holds every file read before,
and configparser then walks all sections read so far (to join multi-line values), as
does supervisor's `expand_here` (for `%(here)s`): the work grows with the square of the
number of files. One program file per agent makes that ~1.1 s of one core at 500 agents
(~0.2 s with this parser), before the first agent can start on a cold `up` and on every
`reloadConfig` after a change, with supervisord's main loop blocked meanwhile (bench/).
Here each included file is parsed on its own and merged; the parse's result is the same
(tests/fleet/test_supervisord_launch.py compares them). It also installs `spawngate`.
"""

from __future__ import annotations

import configparser
from typing import Any

HERE = "%(here)s"


def linear_parser(stock: type[Any]) -> type[Any]:
    """A subclass of supervisor's UnhosedConfigParser whose `read` parses each file alone
    and whose next `expand_here` visits only the sections that file touched."""

    class LinearIncludeParser(stock):
        _just_read: list[str] | None = None

        def read(self, filenames: Any, **kwargs: Any) -> list[str]:
            if isinstance(filenames, str):
                filenames = [filenames]
            read_ok: list[str] = []
            touched: list[str] | None = []
            for filename in filenames:
                part = stock()
                if not stock.read(part, filename, **kwargs):
                    continue  # unreadable: skipped, as configparser does
                read_ok.append(filename)
                names = _merge(self, part, filename)
                # a [DEFAULT] applies to every section: expand them all, as stock does
                touched = None if touched is None or part._defaults else touched + names
            self._just_read = touched
            return read_ok

        def expand_here(self, here: str | None) -> None:
            sections, self._just_read = self._just_read, None
            if sections is None:
                stock.expand_here(self, here)
                return
            for section in sections:
                for key, value in self.items(section):
                    if HERE in value:
                        assert here is not None, "here has not been set to a path"
                        self.set(section, key, value.replace(HERE, here))

    return LinearIncludeParser


def _merge(parser: Any, part: Any, filename: str) -> list[str]:
    """`part` (one file, parsed alone) into `parser`, as reading the file into `parser`
    would have left it; the names of the sections it touched."""
    parser._defaults.update(part._defaults)
    for name, options in part._sections.items():
        mine = parser._sections.get(name)
        if mine is None:
            parser._sections[name] = options
            parser._proxies[name] = configparser.SectionProxy(parser, name)
            parser.section_to_file[name] = filename
        else:
            mine.update(options)  # strict=False: a later file's options win
    return list(part._sections)


def install() -> bool:
    """Use the linear parser in this process's supervisor; False (and the stock parser)
    where supervisor's parser is not the one this module knows."""
    from supervisor import options

    stock: Any = getattr(options, "UnhosedConfigParser", None)
    if not (
        isinstance(stock, type)
        and issubclass(stock, configparser.RawConfigParser)
        and all(callable(getattr(stock, m, None)) for m in ("read", "expand_here"))
    ):
        return False
    probe = stock()
    if not hasattr(probe, "section_to_file") or not hasattr(probe, "_proxies"):
        return False
    options.UnhosedConfigParser = linear_parser(stock)
    return True


def main() -> None:
    install()
    from multiagent.fleet.supervisord import spawngate

    spawngate.install()  # a pass's programs run once it has forked them all
    from supervisor import supervisord

    supervisord.main()


if __name__ == "__main__":
    main()
