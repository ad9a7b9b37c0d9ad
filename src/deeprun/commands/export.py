"""``deeprun-export RUN_DIR [precision=float32] [batch_sizes=[1,32,256,1024]] [repeats=50]``: the book's
low-latency guideline — fold batch norm into the Dense layers, export, and time inference per precision.

At inference, batch norm is a fixed per-feature affine map (Eq. 11-4 with the moving statistics):

    BN(x) = γ⊗(x − μ)/σ + β = s⊗x + t,   s = γ/σ,  t = β − γ⊗μ/σ,  σ = √(v + ε)   (Keras ε = 1e-3)

so it merges into an adjacent Dense layer (x ↦ xW + b, W of shape in × out):

- BN right after the Dense (``normalization=batchnorm_before``: Dense → BN → activation), the book's
  formula: W' = W·diag(s), i.e. W'[:, j] = γ_j W[:, j]/σ_j, and b' = s⊗b + t = γ⊗(b − μ)/σ + β.
- BN before the Dense (``normalization=batchnorm``: the input BN layer, and BN after each activation,
  which the next Dense reads): (s⊗x + t)W + b = x·diag(s)W + (tW + b), so W' = diag(s)·W (row i scaled
  by s_i) and b' = b + tW.

The pixel scaling the run was trained with (x = p/255, or (p/255 − m)/std when standardizing) is the
same kind of affine map, so it is folded into the first Dense as well: the exported model reads raw
pixel values (0–255, flattened). What remains is Dense → activation → … → Dense, logits out; dropout is
an identity at inference. PReLU's learned slopes are exported with their layer.

``RUN_DIR/export/`` gets ``model.npz`` (kernels, biases, PReLU slopes in ``precision``; bfloat16 stored as
its uint16 bit pattern), ``manifest.json`` (layers, shapes, activation, head, precision) and
``latency.json``: the median time of one jitted call per batch size for the unfolded float32 model and
the folded model in float32, bfloat16 and float16, with each variant's test accuracy and its argmax
agreement with the unfolded model. :func:`load_export` runs the export from these files alone.
"""

from __future__ import annotations

from typing import Any

from deeprun.commands.common import run_folder_command
from deeprun.runs.export import ExportOptions, export_run


def tables(report: dict[str, Any]):
    from rich.table import Table

    checks = Table(title=f"test split vs the unfolded model ({report['export']})")
    for column in ("model", "test accuracy", "argmax agreement", "max |Δlogit|"):
        checks.add_column(column, justify="left" if column == "model" else "right")
    for label, check in report["checks"].items():
        checks.add_row(
            label,
            f"{check['test_accuracy']:.4f}",
            f"{check['argmax_agreement']:.4f}",
            f"{check['max_abs_logit_diff']:.2e}",
        )
    result = [checks]
    if report["latency"]:
        sizes = sorted({row["batch_size"] for row in report["latency"]})
        latency = Table(title=f"median latency per call, ms ({report['device']['kind']})")
        latency.add_column("model")
        for size in sizes:
            latency.add_column(f"batch {size}", justify="right")
        for label in report["checks"]:
            times = {row["batch_size"]: row["median_ms"] for row in report["latency"] if row["model"] == label}
            latency.add_row(label, *(f"{times[size]:.3f}" for size in sizes))
        result.append(latency)
    return result


def main(argv: list[str] | None = None) -> None:
    report = run_folder_command("deeprun-export", __doc__, ExportOptions, export_run, argv)
    from deeprun.commands.console import console

    for table in tables(report):
        console.print(table)
    console.print(f"export folder: {report['export']} ({report['precision']})")


if __name__ == "__main__":
    main()
