"""What is observed: the `TaskData` container, splits and scaling, loaders of real data."""

from bayesmtl.data.taskdata import TaskData

__all__ = ["TaskData"]
