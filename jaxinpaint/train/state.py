"""The training state: one explicit pytree, checkpointed whole.

``TrainState.nets`` holds, per network of the system (``'generator'``, ``'discriminator'``,
``'edge_generator'``...), its :class:`NetState`: parameters, mutable collections (BatchNorm ``batch_stats``,
spectral-norm vectors), optimiser state (``()`` for a network that is never updated) and the EMA of its
parameters (``{}`` unless the system asks for one and ``config.ema.decay > 0``). ``step`` counts completed
steps and ``rng`` is raw key data (uint32) so orbax stores it like any array. The data position is the step.
"""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class NetState:
    params: Any
    state: Any
    opt_state: Any
    ema: Any


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    rng: jax.Array
    nets: dict[str, NetState]

    def params(self, *, ema: bool = False) -> dict[str, Any]:
        """``{network: parameters}``, the EMA ones where kept when ``ema``."""
        return {n: (s.ema if ema and s.ema else s.params) for n, s in self.nets.items()}

    def states(self) -> dict[str, Any]:
        return {n: s.state for n, s in self.nets.items()}
