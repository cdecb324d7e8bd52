"""Training: the parts built from the config (parts), the one wiring of every training task
(wiring), and the epoch-loop driver (trainer)."""
