"""User errors of the command-line entry points (train_net.py, demo.py, tools/*.py).

A wrong argument, a missing config / weights / image file, a config key typo: the entry point
prints one message saying what was wrong and how to fix it, ``<prog>: error: <message>``, and
exits with status 2 (argparse's status for bad arguments), without a traceback. Library code
raises :class:`UserError` (or one of its subclasses, which are also the built-in exception a
caller would expect: ``FileNotFoundError``, ``KeyError``, ``ValueError``); the entry points wrap
their ``main`` in :func:`run_main` / :func:`command_line`.
"""
import sys

__all__ = ["USER_ERROR_STATUS", "UserError", "UserFileNotFoundError", "UserKeyError",
           "UserValueError", "report_user_error", "run_main", "command_line"]

USER_ERROR_STATUS = 2


class UserError(Exception):
    """A wrong argument, config or input file: reported as one message (no traceback), exit
    status 2. ``str(error)`` is the message itself (also for the ``KeyError`` subclass, whose
    ``str`` would otherwise be the message's repr)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file named by the user (config, weights, image, dataset file) does not exist."""


class UserKeyError(UserError, KeyError):
    """A config key or a name (dataset, config) that does not exist."""


class UserValueError(UserError, ValueError):
    """A value that cannot work (an argument, a config value, a file's content)."""


def report_user_error(prog, error, file=None):
    """Print ``<prog>: error: <message>`` (the message on one line) to stderr; returns the exit
    status 2."""
    message = " ".join(str(error).split()) if "\n" not in str(error).strip() else str(error).strip()
    print(f"{prog}: error: {message}", file=file or sys.stderr, flush=True)
    return USER_ERROR_STATUS


def run_main(prog, main, *args, **kwargs):
    """``main(*args, **kwargs)``; a :class:`UserError` becomes one message and exit status 2."""
    try:
        return main(*args, **kwargs)
    except UserError as e:
        return report_user_error(prog, e)


def command_line(prog, main, argv=None):
    """Run ``main(argv)`` as the command ``prog``; returns its exit status: ``main``'s return
    value when that is an int (an exit status), else 0; a :class:`UserError` is one message and
    status 2. For entry points whose ``main`` returns results (metrics, paths) to Python callers::

        sys.exit(command_line("grad_cam.py", main))
    """
    result = run_main(prog, main, argv)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
