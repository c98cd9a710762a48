"""The one exception type of the data layer.

Every problem with data on disk (missing, truncated or corrupt files, a failed download, an
empty selection) is raised as :class:`DataError`, with a message saying which files, which
folder and which environment variable to look at. Invalid arguments (an unknown split, a
resolution other than 64/128, r > d) raise ``ValueError`` as usual.
"""

from __future__ import annotations


class DataError(RuntimeError):
    """A data file is missing, corrupt or cannot be fetched; the message says what to do."""
