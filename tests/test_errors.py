from __future__ import annotations

import pytest

from mserve import errors


@pytest.mark.parametrize(
    ("cls", "exit_code", "status"),
    [
        (errors.UsageError, 2, 400),
        (errors.NotFoundError, 2, 404),
        (errors.UntrustedSourceError, 2, 400),
        (errors.InputError, 1, 400),
        (errors.ConversionError, 1, 422),
        (errors.ParityError, 1, 422),
        (errors.ValidationError, 1, 422),
        (errors.Conflict, 1, 409),
        (errors.Unauthorized, 3, 401),
        (errors.AdminDisabled, 3, 403),
        (errors.RepositoryError, 3, 500),
        (errors.EnvironmentProblem, 3, 503),
    ],
)
def test_each_error_knows_its_exit_code_and_status(cls: type, exit_code: int, status: int) -> None:
    error = cls("boom")
    assert (error.exit_code, error.http_status, str(error)) == (exit_code, status, "boom")
    assert isinstance(error, errors.MserveError)


def test_missing_extra_names_the_install_command() -> None:
    error = errors.MissingExtraError("torch", "torch")
    assert str(error) == "torch is not installed; install it with: pip install 'mserve[torch]'"
    assert error.exit_code == 3


def test_the_docstring_draws_every_error_class() -> None:
    classes = [
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.MserveError)
    ]
    for name in classes:
        assert name in (errors.__doc__ or ""), name


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "[ONNXRuntimeError] : 1 : FAIL : Load model from /tmp/x/model.onnx failed:"
            "/onnxruntime_src/onnxruntime/core/graph/model.cc:180 onnxruntime::Model::Model("
            "ModelProto&&, const PathString&) Unsupported model IR version: 99",
            "Unsupported model IR version: 99",
        ),
        ("\n\n  \x1b[31mbad\x1b[0m value\nsecond line", "bad value"),
        ("cannot open /home/someone/models/iris.joblib: denied", "cannot open iris.joblib: denied"),
        ("see http://example.org/a/b, 1/2 of it", "see http://example.org/a/b, 1/2 of it"),
        ("x" * 500, "x" * 300),
        ("", "no reason given"),  # never the class name: replies carry these lines
    ],
)
def test_foreign_message_is_one_clean_line(message: str, expected: str) -> None:
    assert errors.foreign_message(IndexError(message)) == expected
