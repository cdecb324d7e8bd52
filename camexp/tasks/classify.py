"""task=classify: train a classifier (CE, optionally with CAM-loss) and evaluate it.

    camexp loss.cam.weight=0,1 seed=0,1,2 -m      # the paper's comparison as one sweep

The build order is the shared wiring's (camexp/training/wiring.py, ``train``), in labelled
sections: setup (options, device, seeds), loss, data, model (and its checkpoint record, DDP under
torchrun), optimisation (optimizer and schedule, one-line errors), resume, train, test, report.
task=classify changes none of them; kd, transfer and fewshot's stage 1 pass their differences
(teacher, parameter groups, model surgery) as arguments to the same function.
"""

from omegaconf import DictConfig

from camexp.run.record import RunRecord
from camexp.training.wiring import TaskParts, train


def run(cfg: DictConfig, record: RunRecord) -> dict:
    return train(cfg, record, TaskParts())
