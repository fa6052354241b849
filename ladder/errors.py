"""The errors a user fixes in their inputs rather than in the code.

A stage (ladder.stage) prints an InputError as one line and exits non-zero, without a traceback: the message
names the file, column or param and what is wrong. Anything else is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """A missing file or column, or a bad param: the message is the whole story. A ValueError, so callers that
    take any bad value (and tests) catch it as one."""
