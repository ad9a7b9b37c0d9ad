"""Transfer learning: which layers a run reuses from ``model.init_from`` and copying the donor's arrays into them."""

from __future__ import annotations

from typing import NamedTuple

import jax
from flax import nnx

from deeprun.registry import ConfigError


def reused_layer_names(model_spec, n_blocks: int) -> set[str]:
    """Top-level layer names taken from ``model.init_from``: the input BN (if any) and the first
    ``reuse_layers`` hidden blocks (all of them by default)."""
    count = n_blocks if model_spec.reuse_layers is None else model_spec.reuse_layers
    return {"input_norm", *(f"blocks/{i}" for i in range(count))}


def path_keys(path) -> list[str]:
    keys = [str(getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry)))) for entry in path]
    return [key for key in keys if key != "value"]


def layer_of(path) -> str:
    """``blocks/3`` or ``input_norm`` or ``output`` for a parameter's key path."""
    keys = path_keys(path)
    return "/".join(keys[:2]) if keys[0] == "blocks" else keys[0]


class Donor(NamedTuple):
    """The trained variables a run takes its reused layers from (``model.init_from``'s final state)."""

    params: nnx.State
    batch_stats: nnx.State


def transfer_layers(
    model_spec,
    params: nnx.State,
    batch_stats: nnx.State,
    source: Donor,
) -> tuple[nnx.State, nnx.State]:
    """Copy the reused layers' variables from ``source`` (shapes must match); ConfigError naming the
    layer otherwise."""
    n_blocks = len(nnx.to_pure_dict(params).get("blocks", {}))
    reused = reused_layer_names(model_spec, n_blocks)

    def take(target: nnx.State, donor: nnx.State) -> nnx.State:
        donor_leaves = {"/".join(path_keys(path)): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(donor)}

        def pick(path, leaf):
            if layer_of(path) not in reused:
                return leaf
            key = "/".join(path_keys(path))
            if key not in donor_leaves:
                raise ConfigError(f"model.init_from: the source run has no {key} (it has fewer layers)")
            if donor_leaves[key].shape != leaf.shape:
                raise ConfigError(
                    f"model.init_from: {key} has shape {donor_leaves[key].shape} in the source run, {leaf.shape} here"
                )
            return donor_leaves[key]

        return jax.tree_util.tree_map_with_path(pick, target)

    return take(params, source.params), take(batch_stats, source.batch_stats)
