"""The CLI's errors and the exit codes scripts can trust."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes scripts can trust."""

    OK = 0
    API_ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    CONFLICT = 5
    TIMEOUT = 6
    UNREACHABLE = 7


EXIT_CODES_HELP = """Exit codes:
0 ok,
1 API error (other),
2 usage error,
3 not found (404),
4 not authenticated or not allowed (401/403),
5 conflict or no free GPUs (409),
6 timed out waiting (408 or --timeout),
7 cannot reach the API."""

UNREACHABLE = 0
"""The pseudo HTTP status of an :class:`ApiError` raised when the API could not be reached."""


class ApiError(Exception):
    """The API answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def exit_code(self) -> ExitCode:
        """The CLI exit code for this error."""
        if self.status == UNREACHABLE:
            return ExitCode.UNREACHABLE
        if self.status == 404:
            return ExitCode.NOT_FOUND
        if self.status in (401, 403):
            return ExitCode.AUTH
        if self.status == 409:
            return ExitCode.CONFLICT
        if self.status == 408:
            return ExitCode.TIMEOUT
        return ExitCode.API_ERROR

    def __repr__(self) -> str:
        return f"ApiError({self.status!r}, {self.detail!r})"
