"""The Jinja2 environment over the top-level templates/ folder, and its filter."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2


def template_dir() -> Path:
    # An installed wheel carries templates/ inside the package (multiagent.templates);
    # an editable install or a source checkout has it beside the package.
    package = Path(__file__).resolve().parents[2]  # multiagent/
    inside = package / "templates"
    return inside if (inside / "program.conf.j2").is_file() else package.parent / "templates"


@cache
def environment() -> jinja2.Environment:
    import jinja2  # here, not at the top: commands that render nothing skip its import

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # these are config files, not HTML
        auto_reload=False,  # one command renders hundreds of programs: one stat, not one each
    )
    env.filters["sv"] = supervisor_value
    return env


def supervisor_value(value: Any) -> str:
    """Make a value safe for a supervisord config line (the templates' `sv` filter)."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a supervisord value cannot span lines: {text!r}")
    return text.replace("%", "%%")  # supervisord expands %(name)s in values
