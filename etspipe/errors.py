"""One exception type for mistakes of the user.

Raised deep (a bad path, an unknown config key, a dimension mismatch) and turned
into one clear line with a non-zero exit status at the CLI edge. Anything else
that escapes is a bug and may show a traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: the message names the file, key or video."""


class PartialFailure(Exception):
    """A corpus command finished but some items failed; the summary was already shown."""

    exit_code = 3
