"""The one error type the library raises for bad input; stages turn it into a one-line message."""


class SkewtuneError(Exception):
    """A problem with the user's data, params or files, with a message that says how to fix it."""
