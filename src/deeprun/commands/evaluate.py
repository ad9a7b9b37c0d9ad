"""``deeprun-eval RUN_DIR [mc_samples=100] [split=test] [seed=42] [bins=15]``: evaluate a finished run's
accuracy and calibration, with Monte Carlo dropout (Gal & Ghahramani 2016) when ``mc_samples`` > 0.

MC dropout averages the class probabilities of ``mc_samples`` stochastic passes, each in Keras's
``training=True`` mode (dropout active, batch norm on batch statistics), over the whole split.
Calibration is the expected calibration error over ``bins`` equal-width confidence bins
(:mod:`deeprun.reports.calibration`), of the deterministic model (dropout off) and of the MC-dropout mean.

Files written into the run folder:

- ``mc_dropout.json``: accuracy and ECE, deterministic and (``mc_*``) with MC dropout; the mean
  predictive entropy and predicted-class std of correct and wrong predictions; each reliability bin;
  the first example's probabilities;
- ``calibration.png``: the reliability diagram (accuracy vs confidence per bin, the diagonal, ECE in
  the legend) over the histogram of confidences;
- with MC dropout, ``mc_dropout.npz`` (per example: ``mean`` and ``std`` (n, K) over the passes,
  ``predicted_std`` the std of the predicted class's probability, ``entropy`` H(p̄) = −Σ p̄ log p̄,
  ``deterministic`` the (n, K) probabilities with dropout off, ``labels``) and ``mc_dropout.png`` (the
  first example's mean ± std per class).
"""

from __future__ import annotations

from deeprun.commands.common import run_folder_command
from deeprun.reports.mc_dropout import EvalOptions, mc_dropout


def main(argv: list[str] | None = None) -> None:
    report = run_folder_command("deeprun-eval", __doc__, EvalOptions, mc_dropout, argv)
    line = f"{report['split']} accuracy {report['accuracy']:.4f}"
    if "mc_accuracy" in report:
        line += f" -> {report['mc_accuracy']:.4f} with MC dropout ({report['mc_samples']} passes)"
    print(line)
    line = f"expected calibration error ({report['bins']} bins) {report['ece']:.4f}"
    if "mc_ece" in report:
        line += f" -> {report['mc_ece']:.4f} with MC dropout"
    print(line)
    print(f"first example (label {report['first_example']['label']}): {report['first_example']}")


if __name__ == "__main__":
    main()
