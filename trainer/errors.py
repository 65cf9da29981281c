"""The project-wide error for user mistakes (standard library only)."""


class InputError(ValueError):
    """A mistake in what the user asked for: a path, a glob, a parameter or the data.

    Its message names the problem and the fix; command lines print it without a traceback.
    """
