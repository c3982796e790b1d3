"""``polycom compare``: a seeded, paired, parameter-matched activation comparison.

Modules, one concept each: ``spec`` (what a sweep is), ``plan`` (its runs and their
identity), ``execute`` (running them), ``records`` (what a run left in its folder),
``stats`` / ``efficiency`` / ``scaling`` (the numbers), ``throughput`` (speed and
memory side by side), ``analysis`` (records -> the report's numbers).
"""
