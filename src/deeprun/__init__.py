"""deeprun: Hydra-driven experiment runner for chapter 11 of Hands-On ML, on JAX/Flax NNX/Optax."""

__version__ = "0.1.0"
