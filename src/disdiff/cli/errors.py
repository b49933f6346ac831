"""Which exceptions are user errors (bad input) and get a one-line message instead of a traceback."""

from __future__ import annotations

from disdiff.config import ConfigError
from disdiff.data.base import DatasetError


class UserError(ValueError):
    """Bad command-line input: a wrong option, an output that would overwrite a run, ..."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, DatasetError, FileNotFoundError)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS)
