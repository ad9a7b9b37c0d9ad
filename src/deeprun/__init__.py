"""deeprun: Hydra-driven experiment runner for chapter 11 of Hands-On ML, on JAX/Flax NNX/Optax.

Importing the package does nothing else: the commands (``deeprun.commands``) set up their process.
"""

__version__ = "0.1.0"
