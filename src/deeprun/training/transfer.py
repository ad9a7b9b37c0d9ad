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
    """The trained variables a run takes its reused layers from (``model.init_from``'s final state);
    ``layers`` describes the source run's hidden layers for error messages (e.g. ``"activation relu,
    normalization none"``)."""

    params: nnx.State
    batch_stats: nnx.State
    layers: str = ""


def _layer_keys(state: nnx.State) -> dict[str, set[str]]:
    """Each layer's variable keys below it (``blocks/0`` → ``{"dense/kernel", "dense/bias"}``)."""
    keys: dict[str, set[str]] = {}
    for path, _ in jax.tree_util.tree_leaves_with_path(state):
        parts = path_keys(path)
        depth = 2 if parts[0] == "blocks" else 1
        keys.setdefault("/".join(parts[:depth]), set()).add("/".join(parts[depth:]))
    return keys


def transfer_layers(
    model_spec,
    params: nnx.State,
    batch_stats: nnx.State,
    source: Donor,
    layers: str = "",
) -> tuple[nnx.State, nnx.State]:
    """Copy the reused layers' variables from ``source`` (layers alike, shapes equal); ConfigError naming
    the mismatch otherwise (``layers`` describes this model's hidden layers, as ``Donor.layers``)."""
    n_blocks = len(nnx.to_pure_dict(params).get("blocks", {}))
    source_blocks = len(nnx.to_pure_dict(source.params).get("blocks", {}))
    if model_spec.reuse_layers is not None:
        for count, whose in ((source_blocks, "the source run"), (n_blocks, "this model")):
            if model_spec.reuse_layers > count:
                raise ConfigError(
                    f"model.reuse_layers must be <= {count}: {whose} has {count} hidden layers "
                    f"(got {model_spec.reuse_layers})"
                )
    elif source_blocks < n_blocks:
        raise ConfigError(
            f"model.init_from: the source run has {source_blocks} hidden layers, this model {n_blocks}; "
            "set model.reuse_layers to reuse the first ones"
        )
    reused = reused_layer_names(model_spec, n_blocks)
    compared = f" (the source: {source.layers}; here: {layers})" if source.layers and layers else ""

    def take(target: nnx.State, donor: nnx.State) -> nnx.State:
        donor_leaves = {"/".join(path_keys(path)): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(donor)}
        target_keys, donor_keys = _layer_keys(target), _layer_keys(donor)
        for layer in sorted(reused & set(target_keys)):
            if target_keys[layer] != donor_keys.get(layer, set()):
                theirs = ", ".join(sorted(donor_keys.get(layer, set()))) or "nothing"
                raise ConfigError(
                    f"model.init_from: layer {layer} differs: the source run's holds {theirs}, this model's "
                    f"{', '.join(sorted(target_keys[layer]))}{compared}"
                )

        def pick(path, leaf):
            if layer_of(path) not in reused:
                return leaf
            key = "/".join(path_keys(path))
            if donor_leaves[key].shape != leaf.shape:
                raise ConfigError(
                    f"model.init_from: {key} has shape {donor_leaves[key].shape} in the source run, {leaf.shape} here"
                )
            return donor_leaves[key]

        return jax.tree_util.tree_map_with_path(pick, target)

    return take(params, source.params), take(batch_stats, source.batch_stats)


def describe_layers(settings) -> str:
    """``"activation Relu, normalization BatchNorm"``: what decides a hidden layer's variables."""
    return f"activation {type(settings.activation).__name__}, normalization {type(settings.normalization).__name__}"
