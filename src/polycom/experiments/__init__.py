"""polycom.experiments: the activation comparison (``compare``) and, next, analysis and theory.

The comparison's building blocks live in ``polycom.experiments.compare``: the sweep
specification and plan, run execution (local, process pool, submitit), run records,
the statistics (``stats``), token efficiency, scaling fits, side-by-side throughput.
"""

from ..extras import require

require("lab", "polycom.experiments")  # one line naming the extra, before a bare ModuleNotFoundError
