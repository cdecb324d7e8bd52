"""The end of a training: test with the last weights, then with the best-on-val weights (from
best.pt), EMA and TTA variants, CAM quality with the last weights, and cams.png: the results."""

from __future__ import annotations

import os

from camexp.engine import evaluate, evaluate_variants
from camexp.metrics.convergence import convergence_epochs
from camexp.run.checkpoint import load_checkpoint
from camexp.run.distributed import is_main, unwrap
from camexp.run.tracking import track
from camexp.training.trainer import Trainer


def final_test(trainer: Trainer) -> dict:
    """Test with the last weights, then with the best-on-val weights; CAM quality with the
    last; the picture to cams.png. Returns the results (rank 0: with the test metrics)."""
    metrics = trainer.summary_metrics()
    selection = "val" if trainer.data.val is not None else "none"
    if selection == "val":
        metrics.update(convergence_epochs([row["val/acc1"] for row in trainer.history]))
    if not is_main():  # rank 0 tests and reports; the other ranks hold the same weights
        return {"epochs_completed": len(trainer.history), "metrics": metrics,
                "selection": selection}  # fmt: skip
    model, test, device, amp = trainer.model, trainer.data.test, trainer.device, trainer.amp_dtype
    metrics.update(evaluate(model, track(test, "test"), device, amp_dtype=amp, prefix="test"))
    metrics.update(evaluate_variants(model, test, device, prefix="test", amp_dtype=amp,
                                     ema_model=trainer.ema_model(), tta=trainer.tta))  # fmt: skip
    grid = trainer.log_pictures(trainer.epochs)
    if grid is not None:
        trainer.pictures.save(grid, os.path.join(trainer.run_dir, "cams.png"))
    if trainer.cam_quality is not None:  # with the last weights, like test/acc1
        partial = trainer.checkpoint_path("cam_quality_partial")  # a stop resumes it there
        metrics.update(
            trainer.cam_quality(trainer.model, trainer.data, trainer.device, partial=partial)
        )
    if selection == "val":  # the best-on-val weights; without a val split there are none
        metrics.update(test_best(trainer))
    metrics.pop("test/images_per_s", None)
    metrics.pop("test_best/images_per_s", None)
    train_speeds = [row["train/images_per_s"] for row in trainer.history]
    # The first epoch includes warm-up (allocator, kernels); report the steady state.
    steady = train_speeds[1:] or train_speeds
    return {
        "epochs_completed": len(trainer.history),
        "selection": selection,  # "none": no validation split, hence no best.pt (#13)
        "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
        "train_images_per_s": round(sum(steady) / len(steady), 1),
        "precision": trainer.precision,
        # folder datasets with on_corrupt=skip: the unreadable training images left out
        "skipped_images": getattr(trainer.data.train, "skipped", []),
    }


def test_best(trainer: Trainer) -> dict:
    last_state = {k: v.clone() for k, v in unwrap(trainer.model).state_dict().items()}
    unwrap(trainer.model).load_state_dict(load_checkpoint(trainer.checkpoint_path("best"))["model"])
    best = evaluate(trainer.model, track(trainer.data.test, "test (best)"), trainer.device,
                    amp_dtype=trainer.amp_dtype, prefix="test")  # fmt: skip
    unwrap(trainer.model).load_state_dict(last_state)
    return {k.replace("test/", "test_best/"): v for k, v in best.items()}
