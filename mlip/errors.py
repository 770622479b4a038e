"""Errors that are the user's to fix (bad input, bad configuration).

The CLI prints them as one line on stderr and exits with code 2.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration: a clear message, no traceback, exit code 2."""
