"""The one exception type users see: the CLI prints it as ``error: ...`` and exits 2."""


class HFTransferError(Exception):
    """A mistake in the user's input: one line saying what is wrong, where, and what to do.

    Raised anywhere in the kit for bad recipes, data, models or run directories. Bugs raise
    ordinary exceptions (and keep their tracebacks); this one is for the user to fix.
    """
