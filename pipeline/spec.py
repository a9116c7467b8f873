"""One-line specs used in luigi.cfg: a name followed by key=value options."""
from __future__ import annotations

import ast
import shlex


def parse_spec(text: str) -> tuple[str, dict]:
    """'vit_tiny_patch16_224 img_size=64 depths=(1,1,2,1)' -> (name, kwargs); values are
    Python literals, bare words stay strings; quote a value that holds spaces."""
    if not text.split():
        raise ValueError("empty spec: give a name, then any key=value options")
    name, *pairs = shlex.split(text)
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"spec {text!r}: expected key=value, got {pair!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if value[:1] in "([{":
                raise ValueError(f"spec {text!r}: {key}={value} is not a Python literal; "
                                 "wrap the whole pair in double quotes if it holds quotes "
                                 "or spaces") from None
            kwargs[key] = value
    return name, kwargs


def parse_stages(text: str) -> tuple[int, ...]:
    """Stage indices as a sorted tuple: "" -> (), "2, 1" -> (1, 2)."""
    try:
        return tuple(sorted({int(part) for part in text.replace(",", " ").split()}))
    except ValueError:
        raise ValueError(f"stages = {text!r}: give stage numbers, e.g. 1,2") from None


def parse_names(text: str) -> list[str]:
    """A comma-separated list, blanks dropped: "a, b," -> ["a", "b"]."""
    return [name.strip() for name in text.split(",") if name.strip()]
