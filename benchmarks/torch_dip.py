"""The original Deep Image Prior inpainting loop in PyTorch, for same-window speed comparisons with jaxinpaint's
``dip`` solver (``benchmarks/solvers.py --torch-python``).

The original repository (``DmitryUlyanov/deep-image-prior @ 042e0d4``) is not available offline, so this file is a
line-by-line transliteration of what the benchmark needs from it:

* ``models/common.py``: ``Module.add`` (children named ``str(len(self) + 1)``), ``Concat`` (centre crop, cat on
  dim 1), ``conv()`` (``nn.Sequential(ReflectionPad2d((k-1)/2), Conv2d(..., padding=0))`` for
  ``pad='reflection'``), ``bn()`` (``BatchNorm2d``), ``act('LeakyReLU')`` (``LeakyReLU(0.2, inplace=True)``);
* ``models/skip.py:skip()`` (downsample_mode 'stride' only);
* ``utils/common_utils.py``: ``get_noise`` ('noise': U[0,1) * 0.1; 'meshgrid') and ``optimize`` (Adam, one
  ``closure`` per step: zero_grad, forward on ``z + reg_noise_std * N(0,1)``, MSE on ``out * m`` vs ``img * m``,
  backward, step).

Faithfulness is *checked*, not assumed: ``--check`` loads each reference fixture's state dict into the
transliteration with ``load_state_dict(strict=True)`` (so every key and shape must match the original's) and
compares the training-mode output with the fixture's (which the original code produced); the benchmark script runs
this check before it measures anything.

Run with the PyTorch venv (torch + numpy only)::

    /work/tv/bin/python benchmarks/torch_dip.py --check /work/shared/reference/dip_skip_*.npz
    /work/tv/bin/python benchmarks/torch_dip.py --worker --preset library --size 256 --threads 2

The worker prints ``{"ready": ...}``, then answers each ``steps N`` line on stdin with the wall and CPU seconds of
N optimisation steps, as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch
from torch import nn

# ---- models/common.py ---------------------------------------------------------------------------------------


def add_module(self, module):
    self.add_module(str(len(self) + 1), module)


torch.nn.Module.add = add_module


class Concat(nn.Module):
    def __init__(self, dim, *args):
        super().__init__()
        self.dim = dim
        for idx, module in enumerate(args):
            self.add_module(str(idx), module)

    def forward(self, input):
        inputs = [module(input) for module in self._modules.values()]
        inputs_shapes2 = [x.shape[2] for x in inputs]
        inputs_shapes3 = [x.shape[3] for x in inputs]
        if np.all(np.array(inputs_shapes2) == min(inputs_shapes2)) and np.all(
                np.array(inputs_shapes3) == min(inputs_shapes3)):
            inputs_ = inputs
        else:
            target_shape2, target_shape3 = min(inputs_shapes2), min(inputs_shapes3)
            inputs_ = []
            for inp in inputs:
                diff2 = (inp.size(2) - target_shape2) // 2
                diff3 = (inp.size(3) - target_shape3) // 2
                inputs_.append(inp[:, :, diff2: diff2 + target_shape2, diff3:diff3 + target_shape3])
        return torch.cat(inputs_, dim=self.dim)

    def __len__(self):
        return len(self._modules)


def act(act_fun="LeakyReLU"):
    if act_fun == "LeakyReLU":
        return nn.LeakyReLU(0.2, inplace=True)
    if act_fun == "ELU":
        return nn.ELU()
    if act_fun == "none":
        return nn.Sequential()
    raise ValueError(act_fun)


def bn(num_features):
    return nn.BatchNorm2d(num_features)


def conv(in_f, out_f, kernel_size, stride=1, bias=True, pad="zero", downsample_mode="stride"):
    if stride != 1 and downsample_mode != "stride":
        raise NotImplementedError("only downsample_mode='stride' is transliterated")
    padder = None
    to_pad = int((kernel_size - 1) / 2)
    if pad == "reflection":
        padder = nn.ReflectionPad2d(to_pad)
        to_pad = 0
    convolver = nn.Conv2d(in_f, out_f, kernel_size, stride, padding=to_pad, bias=bias)
    layers = [x for x in [padder, convolver] if x is not None]
    return nn.Sequential(*layers)


# ---- models/skip.py ------------------------------------------------------------------------------------------


def skip(num_input_channels=2, num_output_channels=3, num_channels_down=[16, 32, 64, 128, 128],
         num_channels_up=[16, 32, 64, 128, 128], num_channels_skip=[4, 4, 4, 4, 4], filter_size_down=3,
         filter_size_up=3, filter_skip_size=1, need_sigmoid=True, need_bias=True, pad="zero", upsample_mode="nearest",
         downsample_mode="stride", act_fun="LeakyReLU", need1x1_up=True):
    assert len(num_channels_down) == len(num_channels_up) == len(num_channels_skip)
    n_scales = len(num_channels_down)
    if not isinstance(upsample_mode, (list, tuple)):
        upsample_mode = [upsample_mode] * n_scales
    if not isinstance(downsample_mode, (list, tuple)):
        downsample_mode = [downsample_mode] * n_scales
    if not isinstance(filter_size_down, (list, tuple)):
        filter_size_down = [filter_size_down] * n_scales
    if not isinstance(filter_size_up, (list, tuple)):
        filter_size_up = [filter_size_up] * n_scales
    last_scale = n_scales - 1
    model = nn.Sequential()
    model_tmp = model
    input_depth = num_input_channels
    for i in range(len(num_channels_down)):
        deeper = nn.Sequential()
        skip_ = nn.Sequential()
        if num_channels_skip[i] != 0:
            model_tmp.add(Concat(1, skip_, deeper))
        else:
            model_tmp.add(deeper)
        model_tmp.add(bn(num_channels_skip[i] + (num_channels_up[i + 1] if i < last_scale else num_channels_down[i])))
        if num_channels_skip[i] != 0:
            skip_.add(conv(input_depth, num_channels_skip[i], filter_skip_size, bias=need_bias, pad=pad))
            skip_.add(bn(num_channels_skip[i]))
            skip_.add(act(act_fun))
        deeper.add(conv(input_depth, num_channels_down[i], filter_size_down[i], 2, bias=need_bias, pad=pad,
                        downsample_mode=downsample_mode[i]))
        deeper.add(bn(num_channels_down[i]))
        deeper.add(act(act_fun))
        deeper.add(conv(num_channels_down[i], num_channels_down[i], filter_size_down[i], bias=need_bias, pad=pad))
        deeper.add(bn(num_channels_down[i]))
        deeper.add(act(act_fun))
        deeper_main = nn.Sequential()
        if i == len(num_channels_down) - 1:
            k = num_channels_down[i]  # the deepest
        else:
            deeper.add(deeper_main)
            k = num_channels_up[i + 1]
        deeper.add(nn.Upsample(scale_factor=2, mode=upsample_mode[i]))
        model_tmp.add(conv(num_channels_skip[i] + k, num_channels_up[i], filter_size_up[i], 1, bias=need_bias, pad=pad))
        model_tmp.add(bn(num_channels_up[i]))
        model_tmp.add(act(act_fun))
        if need1x1_up:
            model_tmp.add(conv(num_channels_up[i], num_channels_up[i], 1, bias=need_bias, pad=pad))
            model_tmp.add(bn(num_channels_up[i]))
            model_tmp.add(act(act_fun))
        input_depth = num_channels_down[i]
        model_tmp = deeper_main
    model.add(conv(num_channels_up[0], num_output_channels, 1, bias=need_bias, pad=pad))
    if need_sigmoid:
        model.add(nn.Sigmoid())
    return model


# ---- utils/common_utils.py and inpainting.ipynb's settings ----------------------------------------------------


def get_noise(input_depth, method, spatial_size, noise_type="u", var=1. / 10):
    if isinstance(spatial_size, int):
        spatial_size = (spatial_size, spatial_size)
    if method == "noise":
        net_input = torch.zeros([1, input_depth, spatial_size[0], spatial_size[1]])
        net_input.uniform_() if noise_type == "u" else net_input.normal_()
        net_input *= var
    elif method == "meshgrid":
        assert input_depth == 2
        X, Y = np.meshgrid(np.arange(0, spatial_size[1]) / float(spatial_size[1] - 1),
                           np.arange(0, spatial_size[0]) / float(spatial_size[0] - 1))
        net_input = torch.from_numpy(np.concatenate([X[None, :], Y[None, :]])[None]).float()
    else:
        raise ValueError(method)
    return net_input


# The notebook's three settings (inpainting.ipynb, the same table as jaxinpaint/systems/dip/solver.py PRESETS).
PRESETS = {
    "library": dict(input="noise", input_depth=1, reg_noise_std=0.0, lr=0.01,
                    net=dict(num_channels_down=[16, 32, 64, 128, 128, 128], num_channels_up=[16, 32, 64, 128, 128, 128],
                             num_channels_skip=[0] * 6, filter_size_down=5, filter_size_up=3, filter_skip_size=1,
                             upsample_mode="nearest", need1x1_up=False)),
    "kate": dict(input="noise", input_depth=32, reg_noise_std=0.03, lr=0.01,
                 net=dict(num_channels_down=[128] * 5, num_channels_up=[128] * 5, num_channels_skip=[128] * 5,
                          filter_size_down=3, filter_size_up=3, filter_skip_size=1, upsample_mode="nearest")),
    "vase": dict(input="meshgrid", input_depth=2, reg_noise_std=0.03, lr=0.01,
                 net=dict(num_channels_down=[128] * 5, num_channels_up=[128] * 5, num_channels_skip=[0] * 5,
                          filter_size_down=3, filter_size_up=3, filter_skip_size=1, upsample_mode="nearest")),
}


def build(preset, size, seed=0):
    p = PRESETS[preset]
    torch.manual_seed(seed)
    net = skip(p["input_depth"], 3, need_sigmoid=True, need_bias=True, pad="reflection", act_fun="LeakyReLU",
               **p["net"])
    net_input = get_noise(p["input_depth"], p["input"], (size, size)).detach()
    g = np.random.default_rng(seed)
    img = torch.from_numpy(g.random((1, 3, size, size), dtype=np.float32))
    mask = torch.ones(1, 1, size, size)
    mask[:, :, size // 3: size // 3 + size // 3, size // 4: size // 4 + size // 3] = 0  # ~11 % hole
    return net, net_input, img, mask, p


class Loop:
    """``optimize('adam', ...)`` with the notebook's closure, stepped N at a time."""

    def __init__(self, preset, size, seed=0):
        self.net, self.net_input_saved, img, mask, p = build(preset, size, seed)
        self.reg_noise_std = p["reg_noise_std"]
        self.noise = self.net_input_saved.detach().clone()
        self.mse = torch.nn.MSELoss()
        self.img_m = img * mask
        self.mask = mask
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=p["lr"])

    def closure(self):
        net_input = self.net_input_saved
        if self.reg_noise_std > 0:
            net_input = self.net_input_saved + (self.noise.normal_() * self.reg_noise_std)
        out = self.net(net_input)
        total_loss = self.mse(out * self.mask, self.img_m)
        total_loss.backward()
        return total_loss

    def steps(self, n):
        loss = None
        for _ in range(n):
            self.optimizer.zero_grad()
            loss = self.closure()
            self.optimizer.step()
        return float(loss.detach())


def peak_rss_mib():
    """This process's peak RSS: ``VmHWM`` (reset by exec; ``ru_maxrss`` would carry the parent's peak over the
    fork), falling back to ``getrusage``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(paths):
    """Loads every fixture's weights into the transliteration (strict) and compares outputs; returns the report."""
    report = []
    torch.set_num_threads(1)  # the fixtures were made with 1 thread (README: max |error| 0 then)
    for path in paths:
        z = np.load(path)
        cfg = json.loads(str(z["config_json"]))
        net = skip(**cfg["kwargs"])
        state = {k: torch.from_numpy(np.array(z[k])) for k in z.files if k.split(".")[0].isdigit()}
        net.load_state_dict(state, strict=True)
        x = torch.from_numpy(z["input"])
        with torch.no_grad():
            train_err = float((net.train()(x) - torch.from_numpy(z["output"])).abs().max())
            net.load_state_dict(state, strict=True)  # the train-mode call moved the running statistics
            eval_err = float((net.eval()(x) - torch.from_numpy(z["output_eval"])).abs().max())
        n_params = sum(p.numel() for p in net.parameters())
        ok = train_err <= 1e-4 and eval_err <= 1e-4 and n_params == cfg["n_params"]
        report.append({"fixture": path.rsplit("/", 1)[-1], "max_abs_err_train": train_err,
                       "max_abs_err_eval": eval_err, "n_params": n_params, "ok": ok})
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", nargs="*", default=None, metavar="NPZ", help="verify against reference fixtures")
    ap.add_argument("--worker", action="store_true", help="step the loop on 'steps N' lines from stdin")
    ap.add_argument("--preset", default="library", choices=sorted(PRESETS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.check is not None:
        report = check(args.check)
        print(json.dumps({"check": report}), flush=True)
        return 0 if report and all(r["ok"] for r in report) else 1
    if args.worker:
        torch.set_num_threads(args.threads)
        loop = Loop(args.preset, args.size)
        n_params = sum(p.numel() for p in loop.net.parameters())
        print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "n_params": n_params}), flush=True)
        for line in sys.stdin:
            parts = line.split()
            if not parts or parts[0] != "steps":
                break
            n = int(parts[1])
            t0, c0 = time.perf_counter(), time.process_time()
            loss = loop.steps(n)
            print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "steps": n,
                              "loss": loss, "peak_rss_mib": peak_rss_mib()}),
                  flush=True)
        return 0
    ap.error("give --check or --worker")


if __name__ == "__main__":
    sys.exit(main())
