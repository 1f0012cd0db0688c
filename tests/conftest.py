import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("BAYESMTL_FAST", "1")
# No persistent compilation cache in the test process: with jax 0.12 on the CPU, reading back
# executables that the same long-lived process wrote crashed it (a segfault inside
# get_executable_and_time) after a few hundred compilations. Kernels are shared in memory instead.
os.environ.setdefault("BAYESMTL_JAX_CACHE", "off")

from bayesmtl.inference.runtime import configure  # noqa: E402

configure(host_devices=2, platform="cpu", compilation_cache=False)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
