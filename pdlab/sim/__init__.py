"""The simulated clock: a roofline cost model of a GPU serving a model, and the executor that
returns its predictions instead of running anything."""

from .costmodel import CostModel, Efficiency, StepShape, ridge_point
from .executor import CostModelExecutor

__all__ = ["CostModel", "CostModelExecutor", "Efficiency", "StepShape", "ridge_point"]
