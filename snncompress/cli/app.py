"""The ``snncompress`` command: the Typer app and the one place errors become exit codes.

Exit codes: 0 success, 1 a domain failure (including a failed quality gate), 2 bad usage or input.
"""

from __future__ import annotations

import sys

import typer

from snncompress import __version__

app = typer.Typer(
    name="snncompress",
    help="Compress snnTorch spiking neural networks for neuromorphic and edge hardware, "
         "and report what it saved in memory, operations and energy.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: Rich's option table squeezes long flag names to '--weights-struc…' at 80 columns
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"snncompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: int = typer.Option(0, "--threads", min=0, metavar="N",
                                help="CPU threads for torch (0: chosen from the work; small SNNs run fastest on "
                                     "one, and stay fast when a core is shared). Env: SNNCOMPRESS_THREADS."),
) -> None:
    """snncompress: quantize, prune and report on snnTorch models."""
    if threads:
        import os

        from snncompress.sim.threads import ENV

        os.environ[ENV] = str(threads)


def _register() -> None:
    from snncompress.cli import (
        analyze_cmd,
        demo_cmd,
        evaluate_cmd,
        export_cmd,
        inspect_cmd,
        passes_cmd,
        prune_cmd,
        quantize_cmd,
        report_cmd,
        run_cmd,
        sweep_cmd,
        threshold_cmd,
        verify_cmd,
    )

    for module in (inspect_cmd, evaluate_cmd, quantize_cmd, analyze_cmd, threshold_cmd, prune_cmd, verify_cmd,
                   sweep_cmd, run_cmd, passes_cmd, report_cmd, export_cmd, demo_cmd):
        module.register(app)
    for info in app.registered_commands:
        if info.epilog:
            info.epilog = keep_examples(info.epilog)


_COMMAND_STARTS = ("snncompress ", "torchrun ", "python ", "pip ")


def keep_examples(epilog: str) -> str:
    """Mark each example paragraph of an epilog so the help formatter prints it as written (click's
    ``\\b``): rewrapped, a command breaks inside a flag name (``--weights-`` / ``unstructured``)."""
    paragraphs = epilog.split("\n\n")
    return "\n\n".join(f"\b\n{p}" if p.lstrip().startswith(_COMMAND_STARTS) else p for p in paragraphs)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    from snncompress.errors import SnnCompressError
    from snncompress.sim import distributed

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    clean = False
    try:
        result = app(args=args, standalone_mode=False, prog_name="snncompress")
        clean = True
    except SnnCompressError as exc:
        if debug:
            raise
        if distributed.env_rank() == 0:  # under torchrun every rank meets the same error: rank 0 says it
            typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except _CLICK_ERRORS as exc:
        # one line, like every other bad input (click's own form is a usage block, a hint and the error)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None and getattr(ctx, "command_path", None) else "snncompress"
        if distributed.env_rank() == 0:
            typer.echo(f"error: {' '.join(message.split())} (see '{where} --help')", err=True)
        sys.exit(exc.exit_code)  # 2 for usage errors
    except _ABORTS:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    finally:
        distributed.destroy(wait_for_peers=clean)  # leave a torchrun process group (nothing without one)
    # without standalone mode, typer returns the code of a `typer.Exit` instead of raising it
    sys.exit(result if isinstance(result, int) else 0)


def _cli_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """Usage-error, exit and abort exception types. Typer >= 0.29 vendors click and raises its own
    classes (and no longer installs click); older Typer raises click's: catch whichever exist."""
    errors: list[type] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    try:
        import click
    except ImportError:
        pass
    else:
        errors.append(click.ClickException)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    return tuple(errors), tuple(exits), tuple(aborts)


_CLICK_ERRORS, _EXITS, _ABORTS = _cli_exception_types()


if __name__ == "__main__":
    main()
