"""Backbones: any timm model, plus the CIFAR ResNet-32s and ``tiny_cnn`` that ltbench registers with timm."""

from ltbench.models.backbone import Backbone, create_backbone, list_ltbench_models

__all__ = ["Backbone", "create_backbone", "list_ltbench_models"]
