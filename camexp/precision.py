"""Which autocast precision a run uses: ``amp=auto`` picks bf16 only where the hardware runs it
natively, because emulated bf16 is slower than fp32, not faster.

Measured on this project's two CPU kinds (README): on an AMD Zen 4 with AVX512-BF16, bf16
autocast trains ResNet-20 about 1.35x faster than fp32; on a Zen 3 with AVX2 only, 4-7x slower.

* CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and later), else fp32.
* CPU: bf16 when ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16`` (oneDNN's native bf16
  kernels), else fp32. ``torch.backends.cpu.get_cpu_capability()`` only says "AVX512" or "AVX2",
  which does not tell AVX512-BF16 apart, so it is logged for information only.
"""

import logging
import os

import torch

from camexp.errors import UserError

log = logging.getLogger(__name__)

AMP_OPTIONS = ("auto", "none", "bf16")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # Linux /proc/cpuinfo names
CPUINFO = "/proc/cpuinfo"


def cpu_flags(path: str = CPUINFO) -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        for line in f:
            if line.startswith("flags"):  # the same on every core
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_native_bf16(flags: set[str] | None = None) -> list[str]:
    """The native-bf16 flags this CPU has (an empty list: bf16 would be emulated)."""
    flags = cpu_flags() if flags is None else flags
    return [name for name in NATIVE_BF16_FLAGS if name in flags]


def choose_amp(
    name: str, device: torch.device, *, flags: set[str] | None = None
) -> tuple[torch.dtype | None, str]:
    """``(autocast dtype or None for fp32, the reason in words)`` for ``amp=name``."""
    if name in ("none", None):
        return None, "amp=none"
    if name not in AMP_OPTIONS:
        raise UserError(f"amp={name!r} is not an option; use {', '.join(AMP_OPTIONS)}")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        where = f"the CUDA GPU {'supports' if native else 'does not support'} bf16"
        if name == "bf16" and not native:
            raise UserError(f"amp=bf16 but {where}; use amp=auto or amp=none")
        return (torch.bfloat16, where) if native else (None, where)
    if device.type != "cpu":
        if name == "bf16":
            return torch.bfloat16, f"amp=bf16 requested on {device.type}"
        return None, f"amp=auto keeps fp32 on {device.type}"
    native = cpu_native_bf16(flags)
    capability = torch.backends.cpu.get_cpu_capability()
    if native:
        return torch.bfloat16, f"the CPU has native bf16 ({', '.join(native)}; {capability})"
    reason = f"the CPU has no AVX512-BF16 or AMX ({capability}): bf16 would be emulated"
    if name == "bf16":
        log.warning(
            "amp=bf16 on a CPU without native bf16 (no avx512_bf16/amx_bf16 in %s): expect steps "
            "4-7x slower than fp32 (measured on AMD Zen 3); amp=auto chooses fp32 here",
            CPUINFO,
        )
        return torch.bfloat16, reason
    return None, reason


def describe(dtype: torch.dtype | None) -> str:
    return "bf16 autocast" if dtype == torch.bfloat16 else "fp32"


def precision_name(dtype: torch.dtype | None) -> str:
    """The name a checkpoint, results.json and camexp-report use: ``bf16`` or ``fp32``."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def resume_precision(
    stored: str | None, stored_amp, amp, resolved: torch.dtype | None, epoch: int
) -> torch.dtype | None:
    """The precision a resumed run continues in: the checkpoint's ``stored`` one (a resume on
    another CPU must not switch bf16 <-> fp32 mid-run), unless ``amp`` differs from the run's
    ``stored_amp`` (an override stated on the resume command line): then ``resolved``, with a
    warning when that changes the precision from ``epoch`` on. A checkpoint written before the
    precision was stored keeps ``resolved``, with a warning."""
    now = precision_name(resolved)
    if stored not in ("bf16", "fp32"):
        log.warning("the checkpoint records no precision (older camexp); resuming in %s", now)
        return resolved
    if str(amp) != str(stored_amp):
        if now != stored:
            log.warning("amp=%s stated on resume: the run changes from %s to %s at epoch %d, and "
                        "its results mix precisions", amp, stored, now, epoch)  # fmt: skip
        return resolved
    if now != stored:
        log.warning("resuming in the run's stored precision %s (amp=%s would pick %s on this "
                    "machine); state amp= on resume to change it", stored, amp, now)  # fmt: skip
    return torch.bfloat16 if stored == "bf16" else None
