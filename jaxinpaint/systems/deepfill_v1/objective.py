"""DeepFill v1's objective (``JiahuiYu/generative_inpainting`` v1.0.0 ``inpaint_model.py``, ``inpaint.yml``).

Written from ``shared/docs/systems-more.md`` §10.4-10.6 (the original is CC BY-NC 4.0).

**Boundary.** The trainer's batch is ``{'image': RGB [0, 1], 'mask': 1 = hole, 'box': (top, left)}``; DeepFill
works on **BGR** in [-1, 1] (cv2 read its images), so :func:`to_network` / :func:`from_network` convert here and
nowhere else: released weights see what they were trained on, and users never see BGR. ``box`` is the
``local_size``² box around the hole (``prepare_example``, :func:`jaxinpaint.data.holes.box_around_hole`): for
v1's masks the original bbox the hole was shrunk from.

**Losses** (in [-1, 1] units; x the image, m the mask, x1/x2 the coarse/fine outputs, B(·) the local box,
x̂ = x2·m + x·(1-m), Dsc the discount map on the box, γ 0.9):

* ``l1`` = 1.2·mean(|B(x) - B(x1)|·Dsc) + mean(|B(x) - B(x2)|·Dsc) (``COARSE_L1_ALPHA`` 1.2);
* ``ae`` = [1.2·mean(|x - x1|·(1-m)) + mean(|x - x2|·(1-m))] / mean(1-m): the known region, normalised;
* critics (WGAN): ``d = mean D(x̂) - mean D(x)`` per critic, plus 10·gradient penalty at x + α(x̂ - x),
  α ~ U[0, 1) per sample, counting only hole pixels (B(m) for the local critic, m for the global one);
* G total = 0.001·(1·g_global + g_local) + 1.2·l1 + 1.2·ae with ``g = -mean D(x̂)``;
  critics total = d_global + d_local + 10·(gp_local + gp_global).

x1 gets no adversarial term. In the coarse pre-training phase (``PRETRAIN_COARSE_NETWORK``) only the x1 terms
remain in G's loss and the critics judge x1·m + x·(1-m).

**Schedule** (``__init__.phases``): five critic updates, each on a freshly drawn batch, mask and box, then one
generator update on a sixth fresh batch (neuralgym's ``SecondaryTrainer`` runs the five-step D trainer before
every G step, and every step dequeues new data). Each critic update runs the generator on its own batch (not
trained there: no gradient reaches it). Reals and fakes go through each critic in one call, as the original
concatenates them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxinpaint import contract, losses
from jaxinpaint.data import holes

CRITICS = ("local_critic", "global_critic")


def to_network(image: jax.Array) -> jax.Array:
    """RGB in [0, 1] -> DeepFill's BGR in [-1, 1]."""
    return (image * 2.0 - 1.0)[..., ::-1]


def from_network(x: jax.Array) -> jax.Array:
    """DeepFill's BGR in [-1, 1] -> RGB in [0, 1]."""
    return (x[..., ::-1] + 1.0) * 0.5


def generator_input(batch) -> jax.Array:
    """``x·(1-m) ++ ones ++ m`` with x the BGR image in [-1, 1] (5 channels, ``build_inpaint_net``)."""
    mask = batch["mask"]
    return jnp.concatenate([to_network(batch["image"]) * (1.0 - mask), jnp.ones_like(mask), mask], axis=-1)


def outputs(raw, batch) -> dict:
    """The generator's ``(coarse, fine)`` (BGR, [-1, 1]) -> ``pred``, ``coarse`` and ``composite`` in RGB [0, 1]."""
    coarse, fine = raw
    pred = from_network(fine)
    return {"pred": pred, "coarse": from_network(coarse), "composite": contract.composite(pred, batch["image"],
                                                                                          batch["mask"])}


def predict(nets: contract.Nets, batch, config) -> dict:
    """Eval-mode inference: the refined output, the coarse output and the composite."""
    del config
    return outputs(nets("generator", generator_input(batch)), batch)


def _local(config, batch):
    size = int(config.losses.local_size)
    return lambda t: holes.crop(t, batch["box"], size)


def _completed(nets, batch, coarse_only: bool):
    """``(x, m, x1, x2, x̂)`` in the network domain; x̂ pastes x1 (coarse pre-training) or x2 into the hole."""
    x, m = to_network(batch["image"]), batch["mask"]
    coarse, fine = nets("generator", generator_input(batch))
    predicted = coarse if coarse_only else fine
    return x, m, coarse, fine, predicted * m + x * (1.0 - m)


def generator_update(ctx: contract.Context, *, coarse_only: bool = False):
    """Discounted L1 on the local box + known-region L1 (both stages) + the critics' WGAN generator terms."""
    cfg, batch, nets = ctx.config.losses, ctx.batch, ctx.nets
    local = _local(ctx.config, batch)
    x, m, coarse, fine, complete = _completed(nets, batch, coarse_only)
    stages = [(float(cfg.coarse_l1), coarse)] + ([] if coarse_only else [(1.0, fine)])
    l1 = sum(w * losses.discounted_l1(pred=local(out), target=local(x), gamma=float(cfg.gamma)) for w, out in stages)
    known = 1.0 - m
    ae = sum(w * jnp.mean(jnp.abs(x - out) * known) for w, out in stages) / jnp.mean(known)
    metrics = {"l1": l1, "ae": ae}
    total = float(cfg.l1) * l1 + float(cfg.ae) * ae
    if not coarse_only:
        metrics["g_local"] = -jnp.mean(nets("local_critic", local(complete)))
        metrics["g_global"] = -jnp.mean(nets("global_critic", complete))
        total = total + float(cfg.adversarial) * (float(cfg.global_adversarial) * metrics["g_global"]
                                                 + metrics["g_local"])
    return total, metrics, {}


def critics_update(ctx: contract.Context, *, coarse_only: bool = False):
    """Both WGAN-GP critics on this repeat's own batch: ``d_local + d_global + gp·(gp_local + gp_global)``."""
    cfg, batch, nets = ctx.config.losses, ctx.batch, ctx.nets
    local = _local(ctx.config, batch)
    x, m, _, _, complete = _completed(nets, batch, coarse_only)
    complete = jax.lax.stop_gradient(complete)
    metrics, total = {}, 0.0
    views = {"local": ("local_critic", local(x), local(complete), local(m)),
             "global": ("global_critic", x, complete, m)}
    for (tag, (name, real, fake, mask)), key in zip(views.items(), jax.random.split(ctx.rng, 2)):
        n = real.shape[0]
        scores = nets(name, jnp.concatenate([real, fake], axis=0))
        metrics[f"d_{tag}"] = jnp.mean(scores[n:]) - jnp.mean(scores[:n])
        alpha = jax.random.uniform(key, (n, 1, 1, 1), real.dtype)
        metrics[f"gp_{tag}"] = losses.wgan_gradient_penalty(
            critic_fn=functools.partial(_scores, nets, name), points=real + alpha * (fake - real), mask=mask)
        total = total + metrics[f"d_{tag}"] + float(cfg.gp) * metrics[f"gp_{tag}"]
    return total, metrics, {}


def _scores(nets: contract.Nets, name: str, images: jax.Array) -> jax.Array:
    """A critic's scores without recording state (the critics hold none; used inside the penalty's grad)."""
    return nets.apply(name, images)[0]
