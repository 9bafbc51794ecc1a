from __future__ import annotations

import pytest

from mserve.errors import UsageError
from mserve.reference import Reference, check_model_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iris", Reference("iris")),
        ("iris:12", Reference("iris", version=12)),
        ("iris@stable", Reference("iris", label="stable")),
        ("my.model_v2-x", Reference("my.model_v2-x")),
    ],
)
def test_parse(text: str, expected: Reference) -> None:
    assert Reference.parse(text) == expected
    assert str(Reference.parse(text)) == text


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        ".",
        "../etc",
        "a/b",
        "a\\b",
        "Iris",
        "-iris",
        ".hidden",
        "x" * 65,
        "iris name",
        "ïris",
    ],
)
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid model name"):
        check_model_name(name)


@pytest.mark.parametrize("text", ["iris:0", "iris:01", "iris:-1", "iris:1.5", "iris:", "iris:x"])
def test_bad_versions_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="invalid version"):
        Reference.parse(text)


@pytest.mark.parametrize("text", ["iris@", "iris@Stable", "iris@1abc", "iris@a/b"])
def test_bad_labels_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="invalid label"):
        Reference.parse(text)
