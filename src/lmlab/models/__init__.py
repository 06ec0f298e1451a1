"""The shared Transformer backbone. Imports nothing from the rest of lmlab."""

from lmlab.models.backbone import Backbone
from lmlab.models.config import ModelConfig

__all__ = ["Backbone", "ModelConfig"]
