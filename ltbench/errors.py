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


class Interrupted(SystemExit):
    """A run or suite stopped by SIGTERM: exit status 143 (128 + 15) and one line saying where it
    stopped and how to go on, never the silent status 0 of Lightning's code-less ``SystemExit``."""

    def __init__(self, message: str, code: int = 143) -> None:
        super().__init__(code)
        self.message = message


def _last_line(message: str) -> str:
    """A DataLoader worker re-raises its error with the worker's whole traceback as the message;
    the error's own text is the traceback's last line, after its ``module.Type: `` prefix."""
    if "Original Traceback" not in message:
        return message
    last = message.strip().splitlines()[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and " " not in head else last


def user_error(exc: BaseException) -> Optional[str]:
    """The one-line message of a bad-input error anywhere in ``exc``'s chain, else None.

    jsonargparse wraps errors raised while instantiating classes, so the cause is looked for. Some
    foreign errors are bad input too: a missing checkpoint file, an accelerator the machine lacks.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, LTBenchError):
            return _last_line(str(exc))
        if isinstance(exc, FileNotFoundError) and "heckpoint" in str(exc):
            return f"{exc}; give an existing file, or 'last' to resume from this run's last.ckpt"
        if type(exc).__name__ == "MisconfigurationException" and any(w in str(exc).lower() for w in ("accelerator", "gpu", "cuda", "mps", "tpu")):
            return f"trainer.accelerator: {str(exc).strip().splitlines()[0]}; on a machine without one pass --trainer.accelerator cpu"
        exc = exc.__cause__ or exc.__context__
    return None


def exit_on_user_error(fn: Callable[[], Any], prog: str = "ltbench") -> Any:
    """Run ``fn``; a bad-input error anywhere in its chain ends as one line on stderr, exit status 2."""
    try:
        return fn()
    except Interrupted as e:
        print(f"{prog}: {e.message}", file=sys.stderr)
        sys.exit(e.code)
    except Exception as e:
        message = user_error(e)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
