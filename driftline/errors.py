"""The root of Driftline's own errors.

Anything a user can cause (bad configuration, a malformed event, an unknown
model) raises a :class:`DriftlineError` subclass with a message that names the
bad value; the CLI prints that message on one line and exits non-zero.
"""


class DriftlineError(Exception):
    """An error the user can fix; its message says how."""
