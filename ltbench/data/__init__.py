"""Data modules: one ``LTDataModule`` per dataset family, all stating their facts from labels."""

from ltbench.data.base import LTDataModule
from ltbench.data.cifar import CIFAR10LT, CIFAR100LT
from ltbench.data.lists import ImageListLT, ImageNetLT, INat2018, PlacesLT

from ltbench.data.digits import DigitsLT
from ltbench.data.base_to_new import BaseToNew, FewShot
from ltbench.data.torchvision_sets import TorchvisionSet
from ltbench.data.imagenet_variants import ImageNetVariant
from ltbench.data.digits_ml import DigitsMLLT
from ltbench.data.multilabel import COCOLT, VOCLT

__all__ = [
    "LTDataModule",
    "DigitsLT",
    "BaseToNew",
    "FewShot",
    "TorchvisionSet",
    "ImageNetVariant",
    "CIFAR10LT",
    "CIFAR100LT",
    "ImageListLT",
    "ImageNetLT",
    "PlacesLT",
    "INat2018",
    "DigitsMLLT",
    "COCOLT",
    "VOCLT",
]
