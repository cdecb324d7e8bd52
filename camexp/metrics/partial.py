"""Where the CAM metrics of a final test stood, kept in the run folder so that a stopped run
(preempted, Ctrl-C, a session's end) resumes them at the batch it reached instead of from the
first image: on the whole test split they can take as long as the training did.

The file (``checkpoints/cam_quality_partial.pt``) is data, like a checkpoint: tensors and plain
values, written atomically, read with ``weights_only=True``. It holds a ``key``, a hash of
everything the sums depend on (the weights, the metric options, the test split's size and batch
size); a file with another key, or one that does not read as this module wrote it, is set aside
with a log line and the metrics start from the first image. It never holds a result that a
report would read: results.json is written from the finished sums only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time

import torch

from camexp.run.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

FORMAT = "camexp-cam-quality-partial-v1"
SAVE_EVERY_S = 30.0  # at most one write per this many seconds (one batch can take a minute)


def weights_key(model: torch.nn.Module, *parts) -> str:
    """sha256 of the model's tensors (in name order) and of ``parts`` (their repr)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(str(data.dtype).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    digest.update(repr(parts).encode())
    return digest.hexdigest()


class PartialState:
    """``state`` (a dict of phase name -> plain sums) saved under ``path`` for ``key``."""

    def __init__(self, path: str | None, key: str):
        self.path, self.key = path, key
        self.state: dict = self.read() if path else {}
        self.saved_at = time.monotonic()

    def read(self) -> dict:
        if not os.path.isfile(self.path):
            return {}
        try:
            found = torch.load(self.path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
            why = str(err).splitlines()[0][:120] if str(err) else "damaged"
            log.warning("%s does not read as CAM-metric sums (%s): the metrics start over",
                        self.path, why)  # fmt: skip
            return {}
        if not (isinstance(found, dict) and found.get("format") == FORMAT
                and isinstance(found.get("phases"), dict)):  # fmt: skip
            log.warning("%s is not camexp's CAM-metric sums: the metrics start over",
                        self.path)  # fmt: skip
            return {}
        if found.get("key") != self.key:
            log.info("%s belongs to other weights or options: the CAM metrics start over",
                     self.path)  # fmt: skip
            return {}
        log.info("CAM metrics resume from %s", self.path)
        return found["phases"]

    def phase(self, name: str, check) -> dict | None:
        """The saved sums of phase ``name`` if ``check(sums)`` accepts them, else None."""
        sums = self.state.get(name)
        if sums is None:
            return None
        try:
            ok = isinstance(sums, dict) and check(sums)
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            log.warning("%s: the saved %s sums are malformed: that phase starts over",
                        self.path, name)  # fmt: skip
            self.state.pop(name, None)
            return None
        return sums

    def update(self, name: str, sums: dict, force: bool = False) -> None:
        """Note phase ``name``'s sums; write them when SAVE_EVERY_S passed (or ``force``)."""
        self.state[name] = sums
        if self.path and (force or time.monotonic() - self.saved_at >= SAVE_EVERY_S):
            save_checkpoint(self.path, {"key": self.key, "phases": self.state}, fmt=FORMAT)
            self.saved_at = time.monotonic()

    def flush(self, name: str) -> None:
        """Write phase ``name``'s last sums now (a phase's end), if it noted any."""
        if name in self.state:
            self.update(name, self.state[name], force=True)


def no_file() -> PartialState:
    """A state that keeps its sums in memory only (a final test without a run folder)."""
    return PartialState(None, "")
