"""Tasks: how each experiment wires the common parts.

``task=<name>`` runs ``camexp.tasks.<name>.run(cfg, record)``.
"""
