"""What results.json records about a transfer source checkpoint: enough to group runs by how the
source was pretrained (its loss, dataset, seed), read from the checkpoint's plain-data config."""

from __future__ import annotations


def loss_label(weights: dict[str, float]) -> str:
    """``ce`` or ``ce+cam@1``: the objective a checkpoint was trained with, for grouping."""
    on = [(n, w) for n, w in weights.items() if w]
    return "+".join(n if n == "ce" or w == 1 else f"{n}@{w:g}" for n, w in on) or "none"


def source_summary(state: dict, path: str, results: dict | None = None) -> dict:
    """What results.json records about a source checkpoint: enough to group runs by pretraining."""
    config = state.get("config") or {}
    loss = config.get("loss") or {}
    weights = {n: float(t.get("weight", 1.0)) for n, t in loss.items() if isinstance(t, dict)}
    summary = {
        "kind": "checkpoint",
        "checkpoint": path,
        "epoch": state.get("epoch"),
        "task": (config.get("task") or {}).get("name"),
        "backbone": state["meta"]["model"]["backbone"],
        "dataset": state["meta"]["dataset"]["name"],
        "num_classes": state["meta"]["model"]["num_classes"],
        "in_chans": state["meta"]["model"]["in_chans"],
        "loss_weights": weights,
        "loss": loss_label(weights),
        "regularizer": config.get("regularizer"),
        "seed": config.get("seed"),
        "epochs": config.get("epochs"),
        "init_checkpoint": (config.get("init") or {}).get("checkpoint"),
    }
    if results:
        summary["test_acc1"] = (results.get("metrics") or {}).get("test/acc1")
    return summary
