"""One exception type for user-facing input errors, and how such an error reaches the user: one line.

Kept free of heavy imports: every layer raises these, and entry points report them.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional


class LTBenchError(Exception):
    """Bad input: missing or corrupt data, a wrong config key, a missing checkpoint.

    The message names the file, line or key and what was expected.
    """


class DataError(LTBenchError):
    """Missing, unreadable or malformed dataset files."""


def user_error(exc: BaseException) -> Optional[str]:
    """The one-line message of a bad-input error anywhere in ``exc``'s chain, else None.

    jsonargparse wraps errors raised while instantiating classes, so the cause is looked for.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, LTBenchError):
            return str(exc)
        if isinstance(exc, FileNotFoundError) and "heckpoint" in str(exc):
            return f"{exc}; give an existing file, or 'last' to resume from this run's last.ckpt"
        exc = exc.__cause__ or exc.__context__
    return None


def exit_on_user_error(fn: Callable[[], Any], prog: str = "ltbench") -> Any:
    """Run ``fn``; a bad-input error anywhere in its chain ends as one line on stderr, exit status 2."""
    try:
        return fn()
    except Exception as e:
        message = user_error(e)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
