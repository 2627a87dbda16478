"""Errors the CLI turns into a one-line message on stderr and exit code 2."""


class UsageError(Exception):
    """Bad input from the user (flags, files, config): printed as `error: <message>`, exit 2."""
