"""What is believed: generative NumPyro models, one module per method family."""

__all__: list[str] = []
