"""What machine a number was measured on: timings and results name the CPU they came from."""

from __future__ import annotations

import os
from functools import cache


@cache  # read once per process: results.json records it at every write
def cpu_name() -> str:
    """The model name, with AMD's family/model and Zen generation (the VMs here say "AMD EPYC")."""
    fields = {}
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break  # the first processor is enough
    name = fields.get("model name", "unknown CPU")
    family, model = fields.get("cpu family"), fields.get("model")
    if family is None or model is None:
        return name
    zen = ""
    if "AMD" in name and family == "25":  # Zen 3: Milan 0x01, Vermeer 0x21, Cezanne 0x50 ...
        zen4 = (*range(0x10, 0x20), *range(0x60, 0x80), *range(0xA0, 0xB0))  # Genoa 0x11 ...
        zen = "Zen 4" if int(model) in zen4 else "Zen 3"
    elif "AMD" in name and family == "26":
        zen = "Zen 5"
    elif "AMD" in name and family == "23":  # Zen, Zen+ and Zen 2 (a VM may mask the model)
        zen = "Zen 2 or earlier"
    return f"{name} (family {family} model {model}{': ' + zen if zen else ''})"


def machine_record(device: str | None) -> dict:
    """results.json's ``machine``: the CPU, torch's intra-op threads and version, the device."""
    import torch

    return {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": device}  # fmt: skip
