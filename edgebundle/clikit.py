"""The Click plumbing every ``edgebundle`` command shares: -v/-q and the reporter they choose,
``--version`` with the pins, and the group that turns errors, bugs and signals into exits (the one
place that does). cli.py holds the commands."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

import click

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_SIGNAL_BASE, EdgeBundleError, Interrupted
from .target import interpreters
from .ui import Reporter

_LEVEL_KEY = "edgebundle.level"


def _set_level(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta[_LEVEL_KEY] = "verbose" if param.name == "verbose" else "quiet"


def verbosity(func: Any) -> Any:
    """-v/-q on the group and on every command, so that both `edgebundle -v build` and `edgebundle
    build -v` work."""
    for name, short, text in (
        ("quiet", "-q", "Only errors and the final result line."),
        ("verbose", "-v", "Also every command as it runs, and each step's details."),
    ):
        func = click.option(
            short,
            f"--{name}",
            name,
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_set_level,
            help=text,
        )(func)
    return func


def reporter() -> Reporter:
    """The reporter of this invocation, at the level -q/-v chose."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if "edgebundle.reporter" not in root.meta:
        from .proc import set_default_echo

        root.meta["edgebundle.reporter"] = Reporter(root.meta.get(_LEVEL_KEY, "normal"))
        set_default_echo(root.meta["edgebundle.reporter"])
    reporter: Reporter = root.meta["edgebundle.reporter"]
    return reporter


def echo(line: str) -> None:
    reporter()(line)


def print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from .target import backend_requires, common_requires

    click.echo(f"edgebundle {__version__}")
    for name, pins in interpreters().items():
        click.echo(f"  {name:15} {' '.join((*pins.requires, *common_requires()))}")
    for backend in ("pyinstaller", "nuitka"):
        click.echo(f"  {backend:15} {' '.join(backend_requires(backend))}")
    ctx.exit()


class Edgebundle(click.Group):
    """Errors become exits here and only here: an EdgeBundleError is its one line and its own exit
    code; anything else is a bug, one line and EXIT_INTERNAL; SIGINT, SIGTERM and SIGHUP unwind
    every ``finally`` (partial outputs, staging directories, child processes) and exit 128 + signal.
    --debug (EDGEBUNDLE_DEBUG) shows the traceback instead."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except EdgeBundleError as exc:
            if debug:
                raise
            _fail(f"edgebundle: error: {exc}", exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            click.echo(f"edgebundle: interrupted by {signal.Signals(signum).name}; cleaned up", err=True)
            # Every finally on the way here has run. Exit now with the documented code: about one
            # interrupted build in eight otherwise died by a SIGINT that Python sent itself at exit
            # (strace: si_pid its own), after the message, where the code must be 128 + N.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_SIGNAL_BASE + signum)
        except Exception as exc:
            if debug:
                raise
            detail = " ".join(str(exc).split()) or "no message"
            _fail(
                f"edgebundle: internal error: {type(exc).__name__}: {detail}; run with --debug for the "
                "traceback and report it",
                EXIT_INTERNAL,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _interrupt(signum: int, _frame: object) -> None:
    # Once: a second signal must not cut the cleanup that the first one started.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)
