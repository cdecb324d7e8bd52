"""camexp: CAM-loss experiments (Wang et al., ICCV 2021) on any timm CNN."""

__version__ = "0.1.0"
