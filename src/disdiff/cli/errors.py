"""Which exceptions are user errors (bad input) and get a one-line message instead of a traceback."""

from __future__ import annotations

from disdiff.config import ConfigError
from disdiff.data.base import DatasetError
from disdiff.pipeline.dataset import QuickstartError


class UserError(ValueError):
    """Bad command-line input: a wrong option, an output that would overwrite a run, ..."""


# OSError: a file that cannot be read or written (missing, disk full, no permission), named in the message.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, DatasetError, QuickstartError, OSError)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS)
