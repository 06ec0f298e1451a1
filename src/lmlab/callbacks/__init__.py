"""Lightning callbacks that know nothing about specific objectives."""

from lmlab.callbacks.final_validation import ValidateOnLastStep
from lmlab.callbacks.history import MetricHistory
from lmlab.callbacks.throughput import token_throughput

__all__ = ["MetricHistory", "ValidateOnLastStep", "token_throughput"]
