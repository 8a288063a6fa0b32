"""Method plug-ins; importing this package registers them for the CLI by class name."""

from ltbench.methods.base import LTMethod
from ltbench.methods.baselines import CRT, BalancedSoftmax, CosineClassifier, CrossEntropy, LogitAdjustment
from ltbench.methods.stages import Stage

__all__ = ["LTMethod", "Stage", "CrossEntropy", "LogitAdjustment", "BalancedSoftmax", "CosineClassifier", "CRT"]
