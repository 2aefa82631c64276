"""What a longer run would reach: fit L(B) = c - a * B^(-b) to a row's test bound at three budgets B (passes).

IWAE table 1 runs at a smaller budget compress the paper's 3^i schedule into their own number of passes
(``train.schedule = "iwae"``), so each run's final test L_5000 is the result of a full, shorter schedule:
a point on the curve "final bound against budget". Three such points (here 10, 100 and 820 passes)
determine the three parameters of a power law with an asymptote c; the script solves for them exactly
(b by bisection on the ratio of the two differences, then a and c) and prints L at other budgets,
with the paper's 3,280 passes by default.

This is an extrapolation, not a measurement: it assumes the gap to the asymptote keeps shrinking as a
power of the budget, as it did between the three points.

With two points and ``--exponent b`` (borrowed from a related row's three-point fit) the script solves
for a and c only: a weaker extrapolation, which also assumes the two rows' gaps shrink at the same rate.

Usage:
    python benchmarks/budget_curve.py --point 10:-103.01 --point 100:-91.30 --point 820:-87.9 [--at 3280]
    python benchmarks/budget_curve.py --point 10:-103.06 --point 820:-85.0 --exponent 0.489
"""

from __future__ import annotations

import argparse
import math
import sys


def fit_power_law(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(a, b, c) with L(B) = c - a * B^(-b) through three points (B_i, L_i), B increasing, L increasing
    and concave in log B (each tenfold budget gains less than the one before); else ValueError."""
    if len(points) != 3:
        raise ValueError(f"need exactly three (budget, bound) points, got {len(points)}")
    (b1, l1), (b2, l2), (b3, l3) = sorted(points)
    if not (b1 < b2 < b3) or min(b1, b2, b3) <= 0:
        raise ValueError("budgets must be positive and different")
    d12, d23 = l2 - l1, l3 - l2
    if d12 <= 0 or d23 <= 0:
        raise ValueError(f"the bound must grow with the budget: {l1}, {l2}, {l3}")
    target = d23 / d12

    def ratio(b: float) -> float:  # (B2^-b - B3^-b) / (B1^-b - B2^-b), decreasing in b
        return (b2 ** -b - b3 ** -b) / (b1 ** -b - b2 ** -b)

    lo, hi = 1e-6, 20.0
    if not (ratio(hi) < target < ratio(lo)):
        raise ValueError(f"no power law with an asymptote fits: the gains {d12:.3f} then {d23:.3f} do not shrink "
                         "fast enough (or shrink too fast)")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) > target else (lo, mid)
    return fit_with_exponent([(b1, l1), (b2, l2)], 0.5 * (lo + hi))


def fit_with_exponent(points: list[tuple[float, float]], b: float) -> tuple[float, float, float]:
    """(a, b, c) with L(B) = c - a * B^(-b) through two points (B_i, L_i) for a given exponent b > 0;
    the bound must grow with the budget (a > 0), else ValueError."""
    if len(points) != 2:
        raise ValueError(f"with a given exponent, need exactly two (budget, bound) points, got {len(points)}")
    if not b > 0:
        raise ValueError(f"the exponent must be positive, got {b}")
    (b1, l1), (b2, l2) = sorted(points)
    if not 0 < b1 < b2:
        raise ValueError("budgets must be positive and different")
    if l2 <= l1:
        raise ValueError(f"the bound must grow with the budget: {l1}, {l2}")
    a = (l2 - l1) / (b1 ** -b - b2 ** -b)
    return a, b, l1 + a * b1 ** -b


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--point", action="append", required=True, metavar="PASSES:BOUND",
                        help="a run's budget in passes and its final test bound in nats (three of them; two with --exponent)")
    parser.add_argument("--at", type=float, nargs="+", default=[3280.0], help="budgets to predict (passes)")
    parser.add_argument("--exponent", type=float, default=None,
                        help="fit only a and c through two points with this exponent b (from a related row)")
    args = parser.parse_args(argv)
    try:
        points = [(float(p.split(":")[0]), float(p.split(":")[1])) for p in args.point]
    except (IndexError, ValueError):
        parser.error(f"--point takes PASSES:BOUND, e.g. 100:-91.30; got {args.point}")
    try:
        a, b, c = fit_power_law(points) if args.exponent is None else fit_with_exponent(points, args.exponent)
    except ValueError as e:
        print(f"budget_curve: {e}", file=sys.stderr)
        return 2
    print(f"L(B) = {c:.2f} - {a:.2f} * B^(-{b:.3f})   (asymptote {c:.2f} nats)")
    for budget in args.at:
        print(f"  {budget:,.0f} passes: {c - a * budget ** -b:.2f} nats")
    assert all(math.isclose(c - a * bb ** -b, ll, abs_tol=1e-6) for bb, ll in points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
