"""One process per run folder: an advisory ``fcntl`` lock on ``RUN_DIR/.lock``, held for the
run's lifetime.

The lock dies with its process (the kernel releases it, whatever killed the process), so a
folder left by a dead run is simply taken over; the PID written into the file only names the
holder in the message a second process stops with.
"""

import fcntl
import os

from camexp.errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            folder = os.path.dirname(self.path)
            raise UserError(
                f"{folder} is in use by process {holder} (another camexp run); wait for it to "
                "end, or pick another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
