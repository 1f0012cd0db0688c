import os

# Threaded OpenBLAS oversubscribes 2 cores (a 170 x 170 Cholesky took 40-450 ms instead of 0.5 ms
# under load); the Makefile sets this too, before any numpy import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("BAYESMTL_FAST", "1")
# No persistent compilation cache in the test process: with jax 0.12 on the CPU, reading back
# executables that the same long-lived process wrote crashed it (a segfault inside
# get_executable_and_time) after a few hundred compilations. Kernels are shared in memory instead.
os.environ.setdefault("BAYESMTL_JAX_CACHE", "off")

from bayesmtl.inference.runtime import configure

configure(host_devices=2, platform="cpu", compilation_cache=False)

import jax

jax.config.update("jax_enable_x64", False)


import gc

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Free each module's compiled XLA executables when it ends. A test worker runs dozens of
    modules; with every executable kept, compiling the SBC's NUTS kernel late in a worker's life
    crashed the process (abort / segfault inside XLA's CPU compiler, reproducibly at the same test
    of a full `make test`, never when the module ran alone)."""
    yield
    gc.collect()
    jax.clear_caches()
