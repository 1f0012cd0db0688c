"""What is believed: generative NumPyro models, one module per method family.

* `hierarchical`: pooled, independent and hierarchical multitask linear models.
* `task_clustering`: Bakker & Heskes (2003) shared-representation networks with Gaussian,
  task-dependent-mean, clustering and gating priors.
* `coalescent`, `tree`, `latent_hierarchy`: Daume III (2009) latent hierarchies over a Kingman
  coalescent, with Brownian diffusion down the tree.
* `gig`, `matrix_normal`, `sparse_mtl`: Archambeau, Guo & Zoeter (2011) sparse Bayesian multitask
  learning with GIG scale mixtures.
"""

from bayesmtl.models import (
    coalescent,
    gig,
    hierarchical,
    latent_hierarchy,
    matrix_normal,
    sparse_mtl,
    task_clustering,
)

__all__ = [
    "coalescent",
    "gig",
    "hierarchical",
    "latent_hierarchy",
    "matrix_normal",
    "sparse_mtl",
    "task_clustering",
]
