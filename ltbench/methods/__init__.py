"""Method plug-ins; importing this package registers them for the CLI by class name."""

from ltbench.methods.base import LTMethod
from ltbench.methods.baselines import (
    ASL,
    BCE,
    CRT,
    BalancedSoftmax,
    CosineClassifier,
    CrossEntropy,
    DBFocal,
    Focal,
    LogitAdjustment,
)
from ltbench.methods.stages import Stage
from ltbench.methods.tde import TDE
from ltbench.methods.cprfl import CPRFL
from ltbench.methods.clip_prompt import CoCoOp, CoOp, ZeroShotCLIP
from ltbench.methods.cdc import CDC
from ltbench.methods.maple import MaPLe
from ltbench.methods.seda import SeDA
from ltbench.methods.tscnet import TSCNet

__all__ = ["LTMethod", "Stage", "CrossEntropy", "LogitAdjustment", "BalancedSoftmax", "CosineClassifier", "CRT"]
__all__ += ["BCE", "ASL", "Focal", "DBFocal"]
__all__ += ["TDE"]
__all__ += ["CPRFL"]
__all__ += ["ZeroShotCLIP", "CoOp", "CoCoOp", "MaPLe", "CDC"]
__all__ += ["SeDA", "TSCNet"]
