"""Every failure mserve reports, in one tree.

    MserveError                  exit 3, HTTP 500   base; anything unexpected from our own code
    ├── UsageError               exit 2, HTTP 400   a bad argument, name or reference
    │   ├── NotFoundError        exit 2, HTTP 404   no such model, version or label
    │   └── UntrustedSourceError exit 2, HTTP 400   loading the source would run its code
    ├── CheckFailed              exit 1, HTTP 422   a check ran and said no
    │   ├── InputError           exit 1, HTTP 400   an input does not fit the model's signature
    │   ├── ConversionError      exit 1, HTTP 422   the source cannot be converted to ONNX
    │   ├── ParityError          exit 1, HTTP 422   ONNX disagrees with the source model
    │   ├── ValidationError      exit 1, HTTP 422   a published version is not sound
    │   └── Conflict             exit 1, HTTP 409   a change the model's state forbids (a label
    │                                               on a version to retire, a breaking promote)
    ├── EnvironmentProblem       exit 3, HTTP 503   the machine, the disk or an install is at fault
    │   ├── MissingExtraError    exit 3, HTTP 503   an optional framework is not installed
    │   ├── RepositoryError      exit 3, HTTP 500   the repository on disk is unreadable or corrupt
    │   └── ReadOnlyRepository   exit 3, HTTP 503   a change to a repository that cannot be written
    └── ServingError             exit 3             what a model server answers besides the above
        ├── UnknownHost          HTTP 400           a Host the server does not answer for
        ├── Unauthorized         HTTP 401           a missing or wrong admin token
        ├── AdminDisabled        HTTP 403           the admin API is off (no token configured)
        ├── BrowserRefused       HTTP 403           a browser's request (Origin) to the admin API
        ├── MethodNotAllowed     HTTP 405           the route does not take this HTTP method
        ├── PayloadTooLarge      HTTP 413           the request body is over the limit
        ├── Unsupported          HTTP 501           a protocol feature mserve does not serve
        ├── NotReady             HTTP 503           the model or the server cannot take requests
        ├── Overloaded           HTTP 503           the queue is full (the reply has Retry-After)
        └── TimedOut             HTTP 504           the request waited longer than its timeout

The core raises these; only the edges (the CLI, the HTTP layer) turn them into an exit code or a
response. Messages are one line, and never carry a traceback; a library's exception becomes one
through ``foreign_message``.

One rule per kind of failure, the same for every framework and every command:

    failure                                                      class                 exit
    a bad option or argument; --repo that is a file; --atol or   UsageError            2
      --rtol for an output the model lacks; a port out of range
    no such model, version or label (locally or on a server)     NotFoundError         2
    a source file that cannot be read as what it claims to be    UsageError            2
      (a damaged pickle, a .pt2 that is no torch.export file)
    loading the source would run its code (no --trust-source)    UntrustedSourceError  2
    an input or a sample that does not fit the model: a width    InputError            1
      ("the sample has 3 columns; the model takes 4"), a
      dtype, a missing or unknown input, NaN or Infinity in
      JSON (the server refuses them too); a torch module that
      fails on its sample
    the converter cannot convert the model                       ConversionError       1
    ONNX disagrees with the source model                         ParityError           1
    a published version is not sound or not compatible          ValidationError       1
    a lifecycle change the model's state forbids                 Conflict              1
    a benchmark gate or a failed request                         (the report)          1
    a framework not installed                                    MissingExtraError     3
    the repository unreadable or corrupt                         RepositoryError       3
    a change (export, promote, retire, rollback) to a read-only  ReadOnlyRepository    3
      repository (read-only mount, no write permission)
    the machine: a port in use, a server unreachable             EnvironmentProblem    3
    what a model server answers besides the above                ServingError          3
    Ctrl-C                                                       ("interrupted")       130
    anything else is a bug in mserve: "internal error"           (any other)           3
"""

from __future__ import annotations

import re


class MserveError(Exception):
    exit_code = 3
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.model_version = ""  # the version a request failed on, for its reply to name

    def __str__(self) -> str:
        return self.message


class UsageError(MserveError):
    exit_code = 2
    http_status = 400


class NotFoundError(UsageError):
    http_status = 404


class UntrustedSourceError(UsageError):
    pass


class CheckFailed(MserveError):
    exit_code = 1
    http_status = 422


class InputError(CheckFailed):
    http_status = 400


class ConversionError(CheckFailed):
    pass


class ParityError(CheckFailed):
    pass


class ValidationError(CheckFailed):
    pass


class Conflict(CheckFailed):
    http_status = 409


class EnvironmentProblem(MserveError):
    exit_code = 3
    http_status = 503


class MissingExtraError(EnvironmentProblem):
    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'mserve[{extra}]'"
        )
        self.package = package
        self.extra = extra


class RepositoryError(EnvironmentProblem):
    http_status = 500


class ReadOnlyRepository(EnvironmentProblem):
    """503, as services in read-only (maintenance) mode answer writes: the request is sound and
    the server is up, but it cannot make the change until the repository is writable again."""


class ServingError(MserveError):
    pass


class UnknownHost(ServingError):
    http_status = 400


class Unauthorized(ServingError):
    http_status = 401


class AdminDisabled(ServingError):
    http_status = 403


class BrowserRefused(ServingError):
    http_status = 403


class MethodNotAllowed(ServingError):
    http_status = 405

    @classmethod
    def unless(cls, method: str, allowed: str) -> None:
        if method != allowed:
            raise cls(f"method {method} not allowed here; use {allowed}")


class PayloadTooLarge(ServingError):
    http_status = 413


class Unsupported(ServingError):
    http_status = 501


class NotReady(ServingError):
    http_status = 503


class Overloaded(ServingError):
    http_status = 503


class TimedOut(ServingError):
    http_status = 504


# -- messages of exceptions raised by other libraries ---------------------------------------

FOREIGN_MESSAGE_LIMIT = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_LOAD_PREFIX = re.compile(r"^Load model from .*? failed:")
# "/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(...) message": keep the message.
_SOURCE_LOCATION = re.compile(r"/\S*onnxruntime_src/\S+:\d+ .*?\) (?=\S)")
# An absolute path of two or more parts (not a URL, not a fraction): only its last part stays.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])(?:/[^\s/:'\"()\[\],;]+)+/([^\s/:'\"()\[\],;]+)")


def foreign_message(exc: BaseException) -> str:
    """A library's exception as one line fit for a user or a client.

    Its first non-empty line, without terminal colours, onnxruntime's prefixes and C++ source
    locations, with absolute paths cut to their file name, at most 300 characters; "no reason
    given" when it says nothing (never its class name: server replies carry these lines).
    """
    text = _ANSI.sub("", str(exc))
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = _SOURCE_LOCATION.sub("", _LOAD_PREFIX.sub("", _ORT_PREFIX.sub("", line)))
    line = _ABSOLUTE_PATH.sub(r"\1", line).strip()
    return line[:FOREIGN_MESSAGE_LIMIT] or "no reason given"
