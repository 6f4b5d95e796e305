"""Deep Image Prior (Ulyanov et al., CVPR 2018) as a per-image solver: ``jaxinpaint.load('dip')``,
``predict --model=dip``.

* ``model.py``: the original's ``skip()`` encoder-decoder (:class:`~jaxinpaint.systems.dip.model.Skip`);
* ``convert.py``: the original's state-dict keys -> variables (parity tests; DIP has no released weights);
* ``solver.py``: the inpainting notebook's optimisation, presets ``library`` (default), ``kate``, ``vase``.
"""

from jaxinpaint import contract
from jaxinpaint.systems.dip import solver as _solver

SOLVER = contract.Solver(
    name="dip",
    title="Deep Image Prior (Ulyanov et al. 2018): Adam on a random skip network fitted to the known pixels",
    default_config=_solver.default_config,
    solve=_solver.solve,
    host_solve=_solver.host_solve,
    size_multiple=_solver.size_multiple,
    iterations=_solver.iterations,
    licence="Apache-2.0 (DmitryUlyanov/deep-image-prior)",
)
