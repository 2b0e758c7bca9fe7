"""Design-space sweeps and model selection on Optuna (``snncompress sweep``; tinySNN §2.4 Eq. 3).

* :mod:`~snncompress.sweep.space`: the space file (a base recipe and the choices to combine).
* :mod:`~snncompress.sweep.point`: one point run by the library job and costed.
* :mod:`~snncompress.sweep.select`: constraints, the reward R and the Pareto front.
* :mod:`~snncompress.sweep.study`: the Optuna study, storage, grid queue and worker loop.
* :mod:`~snncompress.sweep.run`: the whole sweep as one call (:func:`run_sweep`).
* :mod:`~snncompress.sweep.plot`: the Pareto plot.
"""

from snncompress.sweep.run import SweepJob, SweepProgress, SweepResult, run_sweep
from snncompress.sweep.select import Constraints, pareto_front, parse_memory, reward
from snncompress.sweep.space import Space, load_space, space_from_dict

__all__ = ["Constraints", "Space", "SweepJob", "SweepProgress", "SweepResult", "load_space", "pareto_front",
           "parse_memory", "reward", "run_sweep", "space_from_dict"]
