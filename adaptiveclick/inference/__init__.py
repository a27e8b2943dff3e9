"""Interactive segmentation for tools: :class:`InteractivePredictor` (image + clicks -> mask)."""

from .predictor import InteractivePredictor, PredictionResult

__all__ = ["InteractivePredictor", "PredictionResult"]
