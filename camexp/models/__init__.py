"""Models: the timm backbone wrapper, the small-image nets registered in timm, the checkpoint
contract (build from a checkpoint, check it against a run), the frozen KD teacher, transfer
surgery and the provenance of a transfer source."""
