import pytest

from pipeline.spec import parse_spec


def test_values_are_literals_or_words() -> None:
    name, kwargs = parse_spec("""mvitv2_tiny img_size=32 depths=(1,1,2,1) act=gelu "cfg={'embed_dim':48}" """)
    assert name == "mvitv2_tiny"
    assert kwargs == {"img_size": 32, "depths": (1, 1, 2, 1), "act": "gelu", "cfg": {"embed_dim": 48}}


def test_broken_literal_is_refused_with_the_fix() -> None:
    # Unquoted, shlex eats the inner quotes and the dict would silently become a string.
    with pytest.raises(ValueError, match="double quotes"):
        parse_spec("mvitv2_tiny cfg={'embed_dim':48}")
