"""bayesmtl: a probabilistic-programming model zoo for Bayesian multitask learning."""

__version__ = "0.1.0"
__all__ = ["__version__"]
