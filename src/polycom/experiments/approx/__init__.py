"""``polycom approx``: the PolyCom paper's approximation theory, made checkable.

Modules, one concept each: ``targets`` (the functions fitted and their assumed
smoothness), ``mlp`` (the network fitted, any registered activation), ``fit``
(full-batch L-BFGS with a fixed budget), ``rates`` (log-log slopes with CIs over
seeds, and the rates the theory predicts), ``theory`` (exact constructions: ReLU
and ReLU^2 nets as PolyReLU nets, the sawtooth x^2, x^2 with two PolyReLU units),
``width`` (weight and NTK change vs width), ``report`` (tables, figures, JSON).
See docs/approx.md.
"""
