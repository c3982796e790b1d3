"""The scaling part of REPORT.md: the verdict sentence on the first screen and the section
with the law, its lack of fit, the compute multiplier (measured and extrapolated) and the
wall-clock time to the baseline's loss. Numbers come from ``analysis._scaling`` only."""

from __future__ import annotations

import math

from .markdown import markdown_table

__all__ = ["scaling_verdict", "scaling_section"]


def _x(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}x"


def _interval(m: dict) -> str:
    if not math.isfinite(m["ci_low"]):
        return f"{_x(m['value'])} (no interval: {m['note']})"
    return f"{_x(m['value'])} [{m['ci_low']:.3g}, {m['ci_high']:.3g}]"


def _wall_clock(w: dict | None) -> str:
    if not w:
        return "not measured"
    ci = f" [{w['ci_low']:.3g}, {w['ci_high']:.3g}]" if math.isfinite(w["ci_low"]) else f" (no interval: {w['note']})"
    return f"{_x(w['value'])}{ci}"


def scaling_verdict(scaling: dict, baseline: str) -> list[str]:
    """One sentence per activation, saying no more than the interval at the largest size allows;
    the extrapolation is named as such, and a poor fit is said before the number."""
    lines = []
    for act, c in scaling["comparisons"].items():
        if "error" in c:
            lines.append(f"- **{act}** vs {baseline} across sizes: no law fitted ({c['error']}).")
            continue
        m = c["at_c_max"]
        if math.isfinite(m["ci_low"]) and m["ci_high"] < 1:
            claim = f"needs less compute than {baseline} to reach {baseline}'s loss at the largest size"
        elif math.isfinite(m["ci_low"]) and m["ci_low"] > 1:
            claim = f"needs more compute than {baseline} to reach {baseline}'s loss at the largest size"
        else:
            claim = f"is not distinguishable from {baseline} in compute at the largest size (the interval holds 1 or is missing)"
        poor = [a for a, words in c["fit_check_words"].items() if "poor description" in words]
        caveat = f" The law fits {', '.join(poor)} poorly (residuals beyond the seed noise): read it with care." \
            if poor else ""
        extra = "; ".join(f"{m['factor']:g}x beyond: {_interval(m)}" for m in c["extrapolated"])
        lines.append(f"- **{act}** {claim}: compute multiplier {_interval(m)} ({c['n_seeds']} paired seeds, {c['law']})."
                     f"{caveat} Extrapolated with the fitted law, not measured: {extra}.")
    return lines


def scaling_section(scaling: dict, baseline: str) -> list[str]:
    rows = []
    for act, c in scaling["comparisons"].items():
        if "error" in c:
            rows.append([act, "no fit", c["error"], "", "", "", "", ""])
            continue
        by_factor = {m["factor"]: m for m in c["extrapolated"]}
        rows.append([act, c["law"], _interval(c["at_c_max"]),
                     *(_interval(by_factor[f]) if f in by_factor else "n/a" for f in (10.0, 100.0)),
                     _x(c["power_law_multiplier"]), _wall_clock(c.get("wall_clock")), c["n_seeds"]])
    header = ["activation", "law", "compute multiplier at the largest size [95% CI]", "at 10x (extrapolated)",
              "at 100x (extrapolated)", "two-parameter law a C^-b, largest size",
              f"wall-clock time to {baseline}'s loss [95% CI]", "paired seeds"]
    lines = ["## Scaling", "", markdown_table(header, rows)]
    laws = scaling.get("laws", {})
    if laws:
        lines += ["", "Fitted laws (C in FLOPs): " + "; ".join(
            f"{a}: L = {law['E']:.3f} + {law['A']:.4g} C^-{law['b']:.3f}" if "E" in law else
            f"{a}: L = {law['a']:.4g} C^-{law['b']:.4f}" for a, law in laws.items()) + "."]
    words = {}
    for c in scaling["comparisons"].values():
        words.update(c.get("fit_check_words", {}))
    if words:
        lines += ["", "Lack of fit (mean residual per size against the seed noise, F test): "
                  + "; ".join(f"{a}: {w}" for a, w in words.items()) + "."]
    lines += ["", f"A multiplier below 1: the activation reaches {baseline}'s fitted loss at that compute with that "
              "share of its compute. The wall-clock column divides it by the activation's measured tokens/s over the "
              f"baseline's (side by side at the largest size): the time to reach {baseline}'s loss as a share of "
              f"{baseline}'s time, the number to budget with. Intervals: percentile bootstrap over paired seeds "
              "(with 3 seeds only 10 distinct resamples: coarse), speed rounds resampled independently. "
              "Columns marked extrapolated assume the law holds beyond the sizes run.", ""]
    return lines
