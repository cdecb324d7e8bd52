"""The one exception type that means "the user asked for something wrong".

Raised anywhere (config checks, data readers, checkpoint loading); the entry point turns it
into one line on stderr and a non-zero exit. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A wrong name, path, shape or option. The message says what was wrong and what to do."""


class Diverged(Exception):
    """The training loss became NaN or inf; raised before the optimizer step."""


class Preempted(BaseException):
    """SIGTERM/SIGUSR1/SIGHUP arrived; ``last.pt`` holds the state to continue from. A
    BaseException, like KeyboardInterrupt: no ``except Exception`` on the way (Hydra's, a
    resolver's, a reader's) may swallow it."""


class Busy(UserError):
    """The run folder is in use by another process: nothing was wrong, try again later."""
