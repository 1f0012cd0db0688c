import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("BAYESMTL_FAST", "1")

from bayesmtl.inference.runtime import configure  # noqa: E402

configure(host_devices=2, platform="cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
