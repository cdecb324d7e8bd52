"""The one exception type that means "the user asked for something wrong".

Raised anywhere (config checks, data readers, checkpoint loading); the entry point turns it
into one line on stderr and a non-zero exit. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A wrong name, path, shape or option. The message says what was wrong and what to do."""


class Diverged(Exception):
    """The training loss became NaN or inf; raised before the optimizer step."""


class Preempted(Exception):
    """SIGTERM/SIGUSR1 arrived; ``last.pt`` holds the state to continue from."""
