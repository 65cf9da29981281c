"""The project-wide error for user mistakes, one-line command-line errors, and how a CLI documents its commands (standard library only)."""

import argparse
from typing import NoReturn, TypedDict


class InputError(ValueError):
    """A mistake in what the user asked for: a path, a glob, a parameter or the data.

    Its message names the problem and the fix; command lines print it without a traceback.
    """


class OneLineParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose usage errors are one line (not the whole usage block), exit code 2.

    Subcommand parsers made by ``add_subparsers`` inherit the class, so every command of a CLI
    built on it answers a bad flag value the same way.
    """

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Command(TypedDict):
    """A subcommand's words: ``subparsers.add_parser(NAME, **command)``.

    CLI modules keep them in one table (``COMMANDS``), so the commands and what they do read
    in one place, apart from the flags.
    """

    #: Its line in the parent's command list.
    help: str
    #: The text its own ``--help`` starts with.
    description: str
