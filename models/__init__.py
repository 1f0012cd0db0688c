"""What is believed: generative NumPyro models, one module per method family.

* `hierarchical`: pooled, independent and hierarchical multitask linear models.
"""

from bayesmtl.models import hierarchical

__all__ = ["hierarchical"]
