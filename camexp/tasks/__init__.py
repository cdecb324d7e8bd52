"""Tasks, and only tasks: ``task=<name>`` runs ``camexp.tasks.<name>.run(cfg, record)`` for a name
in ``camexp.main.TASKS``. The training tasks share one wiring (camexp/training/wiring.py)."""
