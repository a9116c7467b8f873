"""One-line specs used in luigi.cfg: a name followed by key=value options."""
from __future__ import annotations

import ast
import shlex

MODES = ("baseline", "kd", "online")  # labels only, from the teacher cache, from the teacher run online


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


def parse_randaugment(text: str) -> tuple[int, int]:
    """RandAugment's "N,M" -> (N, M): N operations, magnitude M of 10; "" -> (0, 0), none."""
    if not text.strip():
        return 0, 0
    try:
        count, magnitude = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"randaugment = {text!r}: give N,M, two whole numbers, e.g. 2,9") from None
    if count < 0 or not 0 <= magnitude <= 10:
        raise ValueError(f"randaugment = {text!r}: N must be >= 0 and M in [0, 10]")
    return count, magnitude


# [teacher] keys a cache of a study may change
CACHE_KEYS = {"views": int, "topk": int, "tail": str, "samples": int, "logit_dtype": str, "logit_rank": int,
              "logit_lead": int, "feature_dtype": str}


def parse_caches(text: str) -> list[dict]:
    """[cache_study] caches: one cache per line (or per ';'), each as key=value pairs of
    CACHE_KEYS: "views=32\\ntopk=5 feature_dtype=int8" -> [{"views": 32}, {"topk": 5, ...}]."""
    return [parse_cache(line) for line in text.replace(";", "\n").splitlines() if line.strip()]


def parse_cache(text: str) -> dict:
    """'topk=5 views=32' -> {"topk": 5, "views": 32}; names the pair it cannot read."""
    out = {}
    for pair in text.split():
        key, sep, value = pair.partition("=")
        if not sep or key not in CACHE_KEYS:
            raise ValueError(f"cache {text!r}: {pair!r} is not key=value with a key of {', '.join(CACHE_KEYS)}")
        try:
            out[key] = CACHE_KEYS[key](value)
        except ValueError:
            raise ValueError(f"cache {text!r}: {key} = {value!r} is not a whole number") from None
    return out


def cache_text(settings: dict) -> str:
    """The inverse of parse_cache, keys sorted: {"views": 32, "topk": 5} -> 'topk=5 views=32'."""
    return " ".join(f"{key}={settings[key]}" for key in sorted(settings))
