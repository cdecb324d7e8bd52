"""Tasks, and only tasks: ``task=<name>`` runs ``camexp.tasks.<name>.run(cfg, record)`` for a name
in ``camexp.main.TASKS``. task=classify is the shared training wiring itself
(camexp/training/wiring.py, ``run``); kd, transfer and fewshot's stage 1 pass it their changes."""
