"""Models: the timm backbone wrapper, the small-image nets registered in timm, the frozen KD teacher
and transfer surgery."""
