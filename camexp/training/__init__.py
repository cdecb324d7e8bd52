"""The wiring every training task shares: build the parts from the config, fit, record."""
