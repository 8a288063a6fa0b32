"""The ``ltbench`` command: the top of the package, which nothing below imports.

``fit``/``validate``/``test``/``predict`` run one config through LightningCLI (``ltbench.runner``);
``leaderboard`` and ``tde-alpha-sweep`` live in ``ltbench/commands/``. Each subcommand imports only
what it needs, so ``ltbench --help`` and ``ltbench leaderboard --help`` never load torch.

``run`` and ``build`` stay importable from here (``from ltbench.cli import run``) for scripts and
tests; they are loaded from ``ltbench.runner`` on first use.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from ltbench.errors import exit_on_user_error

LIGHTNING = {
    "fit": "train a config's model, then test it and write the run record",
    "validate": "evaluate on the validation split",
    "test": "evaluate on the test split and write the run record",
    "predict": "write predictions (index, scores)",
}
COMMANDS = {
    "leaderboard": ("ltbench.commands.leaderboard", "run what a suite is missing, then render its board"),
    "tde-alpha-sweep": ("ltbench.commands.tde_alpha_sweep", "TDE's metrics over alpha on one trained checkpoint"),
}


def usage() -> str:
    width = max(map(len, [*LIGHTNING, *COMMANDS]))
    lines = ["usage: ltbench SUBCOMMAND [options]", "", "Long-tailed image classification benchmark.", "", "subcommands:"]
    lines += [f"  {k:<{width}}  {v}" for k, v in LIGHTNING.items()]
    lines += [f"  {k:<{width}}  {v}" for k, (_, v) in COMMANDS.items()]
    lines += ["", "`ltbench SUBCOMMAND --help` lists a subcommand's options; fit/validate/test/predict take",
              "`--config FILE` (configs/*.yaml) and dotted overrides such as `--model.init_args.alpha 2`."]
    return "\n".join(lines)


def main(args: Optional[list[str]] = None) -> Any:
    """Entry point of ``ltbench``: input errors end in one line, exit status 2.

    Called with ``args`` (tests, scripts) it returns what the subcommand returns; from the shell
    (``args`` None, the console script's ``sys.exit(main())``) it returns None, so success is status 0.
    """
    argv = sys.argv[1:] if args is None else list(args)
    head = argv[0] if argv else None
    if head in (None, "-h", "--help"):
        print(usage(), file=sys.stdout if head else sys.stderr)
        sys.exit(0 if head else 2)
    if head in COMMANDS:
        import importlib

        command = importlib.import_module(COMMANDS[head][0])
        result = _exit(exit_on_user_error(lambda: command.main(argv[1:]), f"ltbench {head}"))
        return None if args is None else result
    if head not in LIGHTNING and not head.startswith("-"):
        print(usage(), file=sys.stderr)
        print(f"ltbench: error: unknown subcommand {head!r} (choose from {', '.join([*LIGHTNING, *COMMANDS])})", file=sys.stderr)
        sys.exit(2)
    from ltbench.runner import run

    _settle(args)
    # None (not sys.argv's copy) when run from the shell: LightningCLI warns when given both
    result = exit_on_user_error(lambda: run(None if args is None else argv))
    return None if args is None else result


def _settle(args: Optional[list[str]]) -> None:
    """From the shell, the imports are done: keep their objects out of every later collection."""
    if args is None:
        from ltbench.lazy import freeze_imported_objects

        freeze_imported_objects()


def _exit(result: Any) -> Any:
    """A command's integer result is the exit status (``leaderboard`` returns 0, 1 or 2); others are returned."""
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
    return result


def __getattr__(name: str) -> Any:
    if name in ("run", "build", "LTBenchCLI", "CLI_KWARGS"):
        import ltbench.runner

        return getattr(ltbench.runner, name)
    if name == "user_error":
        from ltbench.errors import user_error

        return user_error
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
