"""The `fedfunc` command. Each sub-command lives beside the code it drives and registers itself here.

Every error ends the command with one line on stderr (``Error: ...``) and a non-zero exit code, never a
traceback: usage errors name the parameter, the errors our code raises on purpose say what was wrong,
and anything else is reported by its type and message. Text from another party (an API's answer, a
silo's failure reason, an audit entry) is printed through ``safe``: no rich markup is interpreted and no
control character reaches the terminal.
"""
from __future__ import annotations

import sys

import typer
from rich.markup import escape
from typer.core import TyperGroup

# The click typer runs on (typer ships its own copy): its exceptions are the ones commands raise.
click = sys.modules[typer.BadParameter.__module__]


class CliError(click.ClickException):
    """A command's error with its reason, printed as one line (``exit_code`` 1 unless given)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text: object) -> str:
    """``text`` on one line of printable characters (control characters shown escaped)."""
    return "".join(c if c.isprintable() else " " if c in "\n\r\t" else repr(c)[1:-1] for c in str(text)).strip()


def safe(text: object) -> str:
    """Another party's text, for ``console.print``: one line, markup escaped."""
    return escape(one_line(text))


def _error(message: str, code: int = 1):
    typer.echo(f"Error: {one_line(message)}", err=True)
    sys.exit(code)


class OneLineErrors(TyperGroup):
    """The root command group: runs the command and turns every error into one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
            _error(e.format_message() + where, e.exit_code)
        except click.ClickException as e:
            _error(e.format_message(), e.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            _error("aborted")
        except (ValueError, LookupError, OSError, RuntimeError) as e:  # raised on purpose, with the reason
            _error(f"{e}" if str(e) else type(e).__name__)
        except Exception as e:  # a bug: still one line, naming the exception
            _error(f"{type(e).__name__}: {e}")
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  help="Federated learning on Azure Durable Functions: local host, runs, silos, security tools.")


def _register() -> None:
    from fedfunc.host.cli import register as register_host
    register_host(app)
    from fedfunc.silo.cli import register as register_silo
    register_silo(app)
    from fedfunc.security.cli import register as register_security
    register_security(app)
    from fedfunc.demo import register as register_demo
    register_demo(app)
    from fedfunc.run_cli import register as register_run
    register_run(app)
    from fedfunc.tasks.cli import register as register_task
    register_task(app)


def main() -> None:
    _register()
    app()
