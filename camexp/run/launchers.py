"""Sweep launchers are Hydra plugins (pip extra ``launchers``): when one is missing, say which
package to install in one line, instead of Hydra's "Could not load 'hydra/launcher/joblib'"."""

from __future__ import annotations

import re

# Hydra launcher configs -> the plugin package that provides them (camexp's presets included).
LAUNCHER_PLUGINS = {
    "joblib": "hydra-joblib-launcher",
    "parallel": "hydra-joblib-launcher",
    "submitit": "hydra-submitit-launcher",
    "slurm": "hydra-submitit-launcher",
    "local_submitit": "hydra-submitit-launcher",
}
INSTALL_LAUNCHERS = "pip install -e '.[launchers]'"


def _install_line(package: str) -> str:
    return (
        f"hydra/launcher needs the {package} plugin, which is not installed; install the "
        f"launcher plugins with `{INSTALL_LAUNCHERS}` (scripts/setup.sh does it)"
    )


def _plugin_of(name: str) -> str | None:
    return next((p for k, p in LAUNCHER_PLUGINS.items() if name.startswith(k)), None)


def missing_launcher_hint(message: str) -> str | None:
    """Hydra's "Could not load 'hydra/launcher/joblib'" (the plugin is not installed) -> one
    line naming the install command; None for any other message."""
    found = re.search(r"Could not load '?hydra/launcher/(\w+)", message)
    package = _plugin_of(found.group(1)) if found else None
    return _install_line(package) if package else None


def missing_launcher(argv: list[str]) -> str | None:
    """Before Hydra composes: ``hydra/launcher=parallel`` on the command line without its plugin
    installed -> the same one line; None when there is nothing to say."""
    import importlib.util

    for arg in argv:
        key, sep, name = arg.partition("=")
        if sep and key.lstrip("+") == "hydra/launcher":
            package = _plugin_of(name)
            module = package and "hydra_plugins." + package.replace("-", "_")
            if module and importlib.util.find_spec(module) is None:
                return _install_line(package)
    return None
