"""The docs' listing of every setting, made from its two homes: what each key means (the
Config classes' description=) and its default (luigi.cfg). `python -m tasks.settings_doc`
rewrites the listing in docs/configuration.md; a test fails when it is out of date."""
from __future__ import annotations

import configparser
from pathlib import Path

from tasks.config import SECTIONS

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "configuration.md"
SHIPPED = REPO / "luigi.cfg"  # the home of every default
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def read_cfg(path: str | Path) -> configparser.ConfigParser:
    """One config file's values as written: no interpolation, keys case-sensitive as Luigi
    reads them (its parser keeps case)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def listing(cfg: Path = SHIPPED) -> str:
    """Markdown: a table per section, every key with its default and its description."""
    defaults = read_cfg(cfg)
    lines = []
    for section in SECTIONS:
        name = section.__name__
        lines += ["", f"### [{name}]", ""]
        if section.__doc__:
            lines += [" ".join(section.__doc__.split()), ""]
        lines += ["| key | default | what it sets |", "|---|---|---|"]
        for key, param in section.get_params():
            value = defaults.get(name, key, fallback=None)
            shown = "(missing)" if value is None else f"`{value}`" if value else "(empty)"
            lines.append(f"| `{key}` | {shown} | {_described(param)} |")
    return "\n".join(lines[1:])


def _described(param) -> str:
    # Luigi appends a ChoiceParameter's choices from a set, in an order that changes from
    # run to run; our descriptions name the choices themselves.
    return (param.description or "").split(" Choices: {")[0]


def with_listing(text: str, cfg: Path = SHIPPED) -> str:
    """`text` (docs/configuration.md) with the listing between its markers made current."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{listing(cfg)}\n{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(with_listing(DOC.read_text()))
