"""The trainer end to end: outputs, exact resume, sharding on a (4, 2) mesh, NaN handling, configs, multi-host."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxinpaint import config_lib, writers
from jaxinpaint import data as data_lib
from jaxinpaint.train import optim, trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    """Big LaMa's smoke variant shrunk further: every code path of the real config, seconds per compile."""
    c = config_lib.get_config("big_lama:smoke")
    c.generator.ngf = 4
    c.generator.n_blocks = 1
    c.discriminator.ndf = 4
    c.discriminator.n_layers = 2
    c.losses.hrf_perceptual = 0.0
    c.input.image_size = 32
    c.input.batch_size = 8
    c.input.num_workers = 0
    c.total_steps = 4
    c.log_every_steps = 1
    c.ckpt_every_steps = 2
    c.image_every_steps = 2
    for key, value in overrides.items():
        section = c
        *parents, leaf = key.split(".")
        for p in parents:
            section = section[p]
        section[leaf] = value
    return c


def _params(state):
    """Everything that must resume exactly: every network's params, state, optimiser state and EMA, and the RNG."""
    return jax.tree.map(np.asarray, (state.nets, state.rng))


def _eval_weights(tmp_path):
    """Random, narrow LPIPS and FID-Inception weights saved as local files, as a user would name real ones."""
    from jaxinpaint.backbones import inception
    from jaxinpaint.evaluation import lpips

    lpips.save_npz(lpips.random_variables(width_divisor=16), tmp_path / "lpips.npz")
    inception.save_npz(inception.random_variables(width_divisor=16), tmp_path / "inception.npz")
    return {"eval_lpips_weights": str(tmp_path / "lpips.npz"), "eval_fid_weights": str(tmp_path / "inception.npz")}


def test_training_writes_outputs_and_resumes_exactly(tmp_path):
    # EMA on (from step 1, every step) so that its state is part of what must resume exactly; held-out
    # evaluation with LPIPS and FID every 2 steps, keeping the best checkpoint by SSIM besides the latest.
    extra = {"ema.decay": 0.9, "ema.start_step": 1, "eval_every_steps": 2, "eval_num_examples": 8, "keep_ckpts": 1,
             **_eval_weights(tmp_path)}

    def _resume_config(**overrides):
        return tiny_config(**extra, **overrides)

    full = trainer.train_and_evaluate(_resume_config(), str(tmp_path / "full"))
    assert int(full.step) == 4

    # Outputs of the uninterrupted run.
    rows = writers.read_jsonl(tmp_path / "full" / "metrics.jsonl")
    loss_rows = [r for r in rows if "g/total" in r]
    assert [r["step"] for r in loss_rows] == [1, 2, 3, 4]
    expected_terms = {"g/total", "g/l1", "g/adversarial", "g/feature_matching", "d/total", "d/adversarial", "d/r1",
                      "d/real_logits", "d/fake_logits", "grad_norm/generator", "grad_norm/discriminator"}
    assert expected_terms <= set(loss_rows[0])
    assert all(np.isfinite(r["g/total"]) for r in loss_rows)
    eval_rows = [r for r in rows if "eval/ssim" in r]
    assert [r["step"] for r in eval_rows] == [2, 4]
    assert {"eval/psnr", "eval/lpips", "eval/fid", "eval/ssim_fid100_f1", "eval/lpips_fid100_f1"} <= set(eval_rows[0])
    assert 0 < eval_rows[0]["eval/ssim"] <= 1 and eval_rows[0]["eval/num_examples"] == 8
    best = max(eval_rows, key=lambda r: r["eval/ssim"])["step"]
    assert sorted(os.listdir(tmp_path / "full" / "checkpoints")) == sorted({"4", str(best)})
    assert list((tmp_path / "full" / "images").glob("samples_*.png"))
    events = list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and b"g/total" in events[0].read_bytes()

    # Interrupted after 2 steps, then the same workdir again with the full length: identical end state.
    trainer.train_and_evaluate(_resume_config(total_steps=2), str(tmp_path / "resumed"))
    resumed = trainer.train_and_evaluate(_resume_config(), str(tmp_path / "resumed"))
    assert int(resumed.step) == 4
    for a, b in zip(jax.tree.leaves(_params(full)), jax.tree.leaves(_params(resumed))):
        np.testing.assert_array_equal(a, b)
    resumed_all = writers.read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    resumed_rows = [r for r in resumed_all if "g/total" in r]
    assert [r["step"] for r in resumed_rows] == [1, 2, 3, 4]
    assert [r["g/total"] for r in resumed_rows] == [r["g/total"] for r in loss_rows]
    assert [r["eval/ssim"] for r in resumed_all if "eval/ssim" in r] == [r["eval/ssim"] for r in eval_rows]


def _built(config):
    system, networks, phases = trainer.build(config)
    txs = {n: optim.make(net.optimizer) for n, net in networks.items() if net.trainable}
    return system, networks, phases, txs


def _one_step(config, mesh):
    system, networks, phases, txs = _built(config)
    init_fn = trainer.make_init_fn(config, networks, txs)
    rng = jax.random.key_data(jax.random.key(0))
    shardings = trainer.state_shardings(jax.eval_shape(init_fn, rng), mesh, config)
    replicated = NamedSharding(mesh, P())
    with jax.set_mesh(mesh):
        state = jax.jit(init_fn, out_shardings=shardings)(rng)
        batch_sh = trainer.batch_sharding(mesh)
        local = data_lib.InputPipeline(config.input, seed=0).local_batch(0)
        batch = data_lib.make_global_batch(local, batch_sh)
        step = jax.jit(trainer.make_train_step(config, system, networks, txs, phases[0]),
                       in_shardings=(shardings, batch_sh, replicated), out_shardings=(shardings, replicated))
        new_state, metrics = step(state, batch, {})
    return state, new_state, batch, metrics


def test_sharded_train_step_on_a_4x2_mesh_matches_one_device():
    config = tiny_config(fsdp_min_size=256)
    config.mesh.data, config.mesh.fsdp = 4, 2
    mesh = trainer.make_mesh(config)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    state, new_state, batch, metrics = _one_step(config, mesh)

    # The batch is split over both mesh axes; big kernels over 'fsdp'; small arrays replicated.
    assert batch["image"].sharding.spec == P(("data", "fsdp"))
    assert len(batch["image"].addressable_shards) == 8 and batch["image"].addressable_shards[0].data.shape[0] == 1
    g = new_state.nets["generator"]
    kernel = g.params["block_0"]["conv1"]["ffc"]["convl2g"]["kernel"]  # (3, 3, 4, 12): 432 elements
    assert "fsdp" in kernel.sharding.spec
    bias = g.params["head"]["bias"]
    assert bias.sharding.spec == P()
    adam_mu = g.opt_state[1][0].mu["block_0"]["conv1"]["ffc"]["convl2g"]["kernel"]
    assert adam_mu.sharding.spec == kernel.sharding.spec
    assert int(new_state.step) == 1

    single = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
    _, ref_state, _, ref_metrics = _one_step(config, single)
    for key in ("g/total", "d/total", "g/l1", "grad_norm/generator", "grad_norm/discriminator"):
        np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-4)
    # Adam's first step moves every parameter by about +-lr (its sign follows the gradient's), so near-zero
    # gradients whose sign differs with the reduction order can differ by up to 2 lr.
    lr = config.g_optimizer.lr
    for a, b in zip(jax.tree.leaves(new_state.nets["generator"].params),
                    jax.tree.leaves(ref_state.nets["generator"].params)):
        np.testing.assert_allclose(a, b, atol=2.1 * lr)


def test_per_device_batch_norm_statistics():
    """bn_groups=0: one BatchNorm statistics group per device (LaMa's DDP), a different but valid step."""
    config = tiny_config(bn_groups=0)
    mesh = trainer.make_mesh(config)
    from jaxinpaint import contract

    assert contract.resolve_bn_groups(config) == 8
    _, new_state, _, metrics = _one_step(config, mesh)
    global_metrics = _one_step(tiny_config(), mesh)[3]
    assert np.isfinite(float(metrics["g/total"]))
    assert float(metrics["g/total"]) != pytest.approx(float(global_metrics["g/total"]), rel=1e-6)
    with pytest.raises(ValueError, match="bn_groups"):
        contract.resolve_bn_groups(tiny_config(bn_groups=3))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(tiny_config(total_steps=2), workdir)
    bad = tiny_config()
    bad.g_optimizer.lr = float("nan")
    with pytest.raises(trainer.NonFiniteLossError, match="nonfinite_params"):
        trainer.train_and_evaluate(bad, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]


@pytest.mark.parametrize("name,g_params,d_params", [
    ("big_lama", 50_975_875, 6_962_369),
    ("lama_fourier", 27_048_835, 6_962_369),
    ("lama_regular", None, 6_962_369),
])
def test_full_configs_build_the_published_models(name, g_params, d_params):
    config = config_lib.get_config(name)
    _, networks, _, txs = _built(config)
    init_fn = trainer.make_init_fn(config, networks, txs)
    state = jax.eval_shape(init_fn, jax.random.key_data(jax.random.key(0)))
    n_g = sum(x.size for x in jax.tree.leaves(state.nets["generator"].params))
    n_d = sum(x.size for x in jax.tree.leaves(state.nets["discriminator"].params))
    if g_params is None:
        assert 45e6 < n_g < 47e6  # LaMa-Regular: 46M in the paper's Table 2
    else:
        assert n_g == g_params
    assert n_d == d_params
    assert config.input.image_size == 256 and config.losses.adversarial == 10.0
    assert config.losses.feature_matching == 100.0 and config.losses.hrf_perceptual == 30.0
    assert config.losses.r1_gamma == 0.001 and config.losses.l1_weight_known == 10.0
    assert (config.g_optimizer.lr, config.d_optimizer.lr, config.g_optimizer.clip_norm) == (1e-3, 1e-4, 1.0)
    assert config.d_fake == "regenerate" and config.losses.hrf_bn_mode == "train"  # LaMa-exact


def test_init_from_converted_original_weights(tmp_path):
    """Fine-tuning start: G (and D when present) replaced by converted LaMa weights, optimiser states fresh."""
    from conftest import reference_file

    from jaxinpaint import convert
    from jaxinpaint.cli import convert as convert_cli
    from jaxinpaint.io.tree import TreeMismatchError

    converted = tmp_path / "converted"
    assert convert_cli.main([str(reference_file("lama_small_seed0.npz")), str(converted)]) == 0
    config = tiny_config(init_from=str(converted))
    config.generator.ngf, config.generator.n_downsampling, config.generator.n_blocks = 16, 2, 2
    mesh = trainer.make_mesh(config)
    system, networks, _, txs = _built(config)
    init_fn = trainer.make_init_fn(config, networks, txs)
    rng = jax.random.key_data(jax.random.key(0))
    shardings = trainer.state_shardings(jax.eval_shape(init_fn, rng), mesh, config)
    state = jax.jit(init_fn, out_shardings=shardings)(rng)
    d_before = jax.tree.map(np.asarray, state.nets["discriminator"].params)
    state = trainer.load_init_weights(config, state, system)
    _, expected = convert.load_lama_generator(converted)
    g = state.nets["generator"]
    for a, b in zip(jax.tree.leaves(g.params), jax.tree.leaves(expected["params"])):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g.state["batch_stats"]["stem"]["bn_l"]["mean"],
                                  expected["batch_stats"]["stem"]["bn_l"]["mean"])
    for a, b in zip(jax.tree.leaves(state.nets["discriminator"].params), jax.tree.leaves(d_before)):
        np.testing.assert_array_equal(a, b)  # no D in the source
    fewer = g.replace(params={k: v for k, v in g.params.items() if k != "block_1"})
    with pytest.raises(TreeMismatchError, match="block_1"):
        trainer.load_init_weights(config, state.replace(nets={**state.nets, "generator": fewer}), system)


def test_missing_hrf_weights_is_a_clear_error(tmp_path):
    config = tiny_config(**{"losses.hrf_perceptual": 30.0, "losses.hrf_weights": str(tmp_path / "enc.pth")})
    with pytest.raises(FileNotFoundError, match="enc.pth"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_joined_by_jax_distributed(tmp_path):
    """train.py in two local processes (2 CPU devices each) joined by jax.distributed.initialize."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    overrides = ["--config.total_steps=3", "--config.input.image_size=32", "--config.input.batch_size=4",
                 "--config.generator.ngf=4", "--config.generator.n_blocks=1", "--config.discriminator.ndf=4",
                 "--config.discriminator.n_layers=2", "--config.losses.hrf_perceptual=0", "--config.log_every_steps=1",
                 "--config.ckpt_every_steps=3", "--config.image_every_steps=0", "--config.input.num_workers=0"]
    procs = [subprocess.Popen(
        [sys.executable, "train.py", "--config=configs/big_lama.py:smoke", f"--workdir={tmp_path}", *overrides,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
    assert "process 1/2, 2 local / 4 global devices" in outputs[1]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "g/total" in r] == [1, 2, 3]
    assert (tmp_path / "checkpoints" / "3").is_dir()
