"""deeprun's Hydra launcher plugin (Hydra discovers plugins in the ``hydra_plugins`` namespace)."""
