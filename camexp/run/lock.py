"""One process per run folder: a POSIX record lock (``fcntl.lockf``) on ``RUN_DIR/.lock``, held
for the run's lifetime.

The lock belongs to the process, not to its descriptor: DataLoader workers forked from it do not
inherit it, so workers left behind by a killed run never keep the folder (a ``flock`` would stay
held by them). The kernel releases it when the process dies, whatever killed it, so a folder left
by a dead run is simply taken over. POSIX locks never conflict within one process, so this
process's own held folders are also kept in ``_HELD``. The PID written into the file only names
the holder in the message a second process stops with. The file is opened with ``O_NOFOLLOW``: a
``.lock`` that is a symlink is refused, never truncated through.
"""

import errno
import fcntl
import os

from camexp.errors import Busy, UserError

LOCK_NAME = ".lock"
_HELD: set[str] = set()  # real paths of the lock files this process holds


WRITTEN_FOLDERS = (".hydra", "checkpoints", "tensorboard")  # camexp's subfolders of a run


def refuse_symlinks(run_dir: str) -> None:
    """A run folder that holds a symlink where camexp writes (any entry at its top, or inside
    .hydra/, checkpoints/, tensorboard/) is refused: a write would land outside the folder
    (``camexp.log -> ~/.local/.../x.pth``, ``checkpoints -> /elsewhere``)."""
    if not os.path.isdir(run_dir):
        return
    for folder in (run_dir, *(os.path.join(run_dir, name) for name in WRITTEN_FOLDERS)):
        if folder != run_dir and (os.path.islink(folder) or not os.path.isdir(folder)):
            continue  # a symlinked subfolder is caught as an entry of run_dir
        for entry in os.scandir(folder):
            if entry.is_symlink():
                raise UserError(
                    f"{entry.path} is a symlink; camexp never writes through one (it could "
                    "point outside the run folder): remove it, or pick another folder"
                )


class RunLock:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.fd: int | None = None

    def busy(self, holder: str) -> Busy:
        folder = os.path.dirname(self.path)
        return Busy(
            f"{folder} is in use by process {holder} (another camexp run); wait for it to "
            "end, or pick another folder"
        )

    def acquire(self) -> "RunLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        key = os.path.realpath(self.path)
        if key in _HELD:  # this process holds it (lockf would not conflict; a second descriptor
            raise self.busy(str(os.getpid()))  # closed would even drop the lock)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise UserError(
                f"{self.path} is a symlink; camexp never writes through one: remove it"
            ) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise self.busy(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.key = fd, key
        _HELD.add(key)
        return self

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.key)
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
