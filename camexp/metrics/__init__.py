"""CAM quality metrics: localization against boxes (MaxBoxAccV2, top-1 loc) and faithfulness
(Average Drop / Increase in Confidence, Deletion / Insertion AUC)."""

from camexp.metrics.quality import CamQuality

__all__ = ["CamQuality"]
