"""Say which likelihood and KL weight a hand-written VAE loss implies, with the derivation.

The loss per example is taken as  c * sum_d l(x_d, m_d) + w * KL,  with c = 1 for --reduction sum
and 1/D for --reduction mean, the KL summed over latent dimensions. If your code averages the
reconstruction over the batch but sums the KL over it, your w per example is the batch size times
the weight in the code. See docs/likelihoods.md.

Example:  aevb explain --loss mse --reduction mean --dims 784 --kl-weight 1
"""

from __future__ import annotations

import argparse
import json

HELP = "which likelihood, sigma and KL weight (beta) a loss like MSE + KL implies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from aevb.explain import LOSSES, REDUCTIONS

    parser.add_argument("--loss", required=True, choices=LOSSES,
                        help="elementwise reconstruction loss: squared error, binary cross-entropy, absolute error, "
                             "or a count loss (PoissonNLLLoss, negative binomial / ZINB negative log-PMF)")
    parser.add_argument("--reduction", required=True, choices=REDUCTIONS,
                        help="how the loss is reduced over the data dimensions of one example")
    parser.add_argument("--dims", required=True, type=int, help="D, data dimensions per example (784 for MNIST)")
    parser.add_argument("--kl-weight", type=float, default=1.0, help="weight w of the KL term (default: 1)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from aevb.explain import explain_loss, format_explanation

    result = explain_loss(args.loss, args.reduction, args.dims, args.kl_weight)
    print(json.dumps(result, indent=2) if args.json else format_explanation(result))
    return 0
