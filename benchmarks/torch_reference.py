"""PyTorch Big LaMa, and LaMa's complete training step, for same-machine, same-load comparisons.

The project's reference PyTorch figures (0.512 s / 2.071 s forward, 1.637 s forward+backward) were taken on an
idle machine. When the machine is shared (other jobs running), absolute timings drift by 30-100 %, so the only
fair comparison is PyTorch and JAX run in alternation under the same load. This module rebuilds the generator of
``saic-mdal/lama`` (``FFCResNetGenerator`` with big-lama.yaml's kwargs: ngf 64, 3 down-samplings, 18 FFC blocks,
ratio 0.75, reflect padding, no LFU) from plain ``torch.nn`` layers, NCHW, random weights. It is not a port of
the original code and it is not used for numerical parity (the fixtures are); it has the same convolutions,
FFTs, BatchNorms and activations in the same order, so it does the same arithmetic in the same kernels.

It needs PyTorch, which is *not* a jaxinpaint dependency: create a separate venv
(``python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 numpy``) and run::

    /tmp/tv/bin/python benchmarks/torch_reference.py --sizes 256,512 --repeats 5

It prints one JSON line per case (median, min, max seconds), which ``benchmarks/model.py --torch-python``
uses to interleave PyTorch and JAX runs.

``--modes lama_step`` times LaMa's whole training step as ``DefaultInpaintingTrainingModule`` runs it under
Lightning (the order and formulas of /work/shared/reference/README.md's training-step section, which the
project's parity test checks number by number against LaMa's own code): the generator update (G forward,
masked L1 with known ×10 / missing ×0, ``D(x)`` then ``D(ŷ)`` in two calls, non-saturating adversarial ×10,
feature matching ×100, the HRF perceptual loss ×30 through an ADE20k-style ResNet50-dilated-8 encoder with
random frozen weights in train-mode BatchNorm, two calls), gradient clipping to 1 and Adam; then the
discriminator update (a second G forward with the updated G, R1 by double backprop ×0.001 on reals,
mask-as-fake-target on the fakes), clipping and Adam. The networks are LaMa's (Big LaMa, NLayer PatchGAN
ndf 64 / 4 layers, the encoder's deep stem and dilations); it is not a copy of LaMa's code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from torch import nn


class FourierUnit(nn.Module):
    """rfftn over (H, W), ortho; Re/Im interleaved on channels; 1x1 conv + BN + ReLU; irfftn back."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * channels)

    def forward(self, x):
        n, c, h, w = x.shape
        f = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        f = torch.stack((f.real, f.imag), dim=-1).permute(0, 1, 4, 2, 3).contiguous()
        f = f.view(n, -1, h, w // 2 + 1)
        f = torch.relu(self.bn(self.conv_layer(f)))
        f = f.view(n, -1, 2, h, w // 2 + 1).permute(0, 1, 3, 4, 2).contiguous()
        return torch.fft.irfftn(torch.complex(f[..., 0], f[..., 1]), s=(h, w), dim=(-2, -1), norm="ortho")


class SpectralTransform(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, channels // 2, 1, bias=False),
                                   nn.BatchNorm2d(channels // 2), nn.ReLU(True))
        self.fu = FourierUnit(channels // 2)
        self.conv2 = nn.Conv2d(channels // 2, channels, 1, bias=False)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


class FFCBnAct(nn.Module):
    """The 3x3 FFC layer of the residual blocks: l2l, l2g, g2l convs and the spectral g2g path, BN + ReLU."""

    def __init__(self, channels: int, ratio: float = 0.75):
        super().__init__()
        cg = int(channels * ratio)
        cl = channels - cg

        def conv(i, o):
            return nn.Conv2d(i, o, 3, padding=1, padding_mode="reflect", bias=False)

        self.convl2l, self.convl2g, self.convg2l = conv(cl, cl), conv(cl, cg), conv(cg, cl)
        self.convg2g = SpectralTransform(cg)
        self.bn_l, self.bn_g = nn.BatchNorm2d(cl), nn.BatchNorm2d(cg)

    def forward(self, x):
        x_l, x_g = x
        out_l = self.convl2l(x_l) + self.convg2l(x_g)
        out_g = self.convl2g(x_l) + self.convg2g(x_g)
        return torch.relu(self.bn_l(out_l)), torch.relu(self.bn_g(out_g))


class FFCResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = FFCBnAct(channels), FFCBnAct(channels)

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return x[0] + y[0], x[1] + y[1]


class BigLama(nn.Module):
    """FFCResNetGenerator(4, 3, ngf=64, n_downsampling=3, n_blocks=18), sigmoid output, NCHW."""

    def __init__(self, n_blocks: int = 18, ngf: int = 64):
        super().__init__()

        def cbr(i, o, k, s, p):
            return nn.Sequential(nn.Conv2d(i, o, k, s, p, padding_mode="reflect", bias=False),
                                 nn.BatchNorm2d(o), nn.ReLU(True))

        self.stem = nn.Sequential(nn.ReflectionPad2d(3), cbr(4, ngf, 7, 1, 0))
        self.down = nn.Sequential(cbr(ngf, 2 * ngf, 3, 2, 1), cbr(2 * ngf, 4 * ngf, 3, 2, 1))
        dim = 8 * ngf
        cg = int(dim * 0.75)
        self.down_last_l = cbr(4 * ngf, dim - cg, 3, 2, 1)
        self.down_last_g = cbr(4 * ngf, cg, 3, 2, 1)
        self.blocks = nn.ModuleList(FFCResnetBlock(dim) for _ in range(n_blocks))
        up = []
        for i in range(3):
            c_in, c_out = dim // 2**i, dim // 2 ** (i + 1)
            up += [nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, output_padding=1), nn.BatchNorm2d(c_out),
                   nn.ReLU(True)]
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Sigmoid())

    def forward(self, x):
        x = self.down(self.stem(x))
        y = (self.down_last_l(x), self.down_last_g(x))
        for block in self.blocks:
            y = block(y)
        return self.head(self.up(torch.cat(y, dim=1)))


class NLayerDiscriminator(nn.Module):
    """LaMa's PatchGAN (pix2pixhd.NLayerDiscriminator, ndf 64, n_layers 4): logits and the 5 feature maps."""

    def __init__(self, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, ndf, 4, 2, 2), nn.LeakyReLU(0.2, True))]
        nf = ndf
        for i in range(1, n_layers + 1):
            prev, nf = nf, min(nf * 2, 512)
            layers.append(nn.Sequential(nn.Conv2d(prev, nf, 4, 2 if i < n_layers else 1, 2), nn.BatchNorm2d(nf),
                                        nn.LeakyReLU(0.2, True)))
        layers.append(nn.Conv2d(nf, 1, 4, 1, 2))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        feats = []
        for layer in self.layers[:-1]:
            x = layer(x)
            feats.append(x)
        return self.layers[-1](x), feats


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: bool):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * 4)) if downsample else None)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResnetDilated(nn.Module):
    """CSAIL's ResNet50-dilated-8 encoder (deep stem), the HRF perceptual loss's backbone; layer1..4 outputs."""

    def __init__(self):
        super().__init__()

        def cbr(i, o, s):
            return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

        self.stem = nn.Sequential(*cbr(3, 64, 2), *cbr(64, 64, 1), *cbr(64, 128, 1), nn.MaxPool2d(3, 2, 1))
        layers, inplanes = [], 128
        for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
            dilate = {3: 2, 4: 4}.get(li, 1)
            mods = []
            for b in range(blocks):
                stride = 2 if (li == 2 and b == 0) else 1  # layers 3 and 4 trade their stride for dilation
                dil = dilate // 2 if (b == 0 and dilate > 1) else dilate
                mods.append(Bottleneck(inplanes, planes, stride, dil, b == 0))
                inplanes = planes * 4
            layers.append(nn.Sequential(*mods))
        self.layers = nn.ModuleList(layers)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def lama_train_step(generator, size: int, batch: int):
    """One call = LaMa's G update then D update (see the module docstring); returns the step function."""
    discriminator, encoder = NLayerDiscriminator(), ResnetDilated()
    for m in (generator, discriminator, encoder):
        m.train()  # Lightning's model.train(): the frozen encoder's BatchNorm too
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=1e-4)
    image = torch.rand(batch, 3, size, size)
    mask = (torch.rand(batch, 1, size, size) > 0.7).float()
    x = torch.cat([image * (1 - mask), mask], dim=1)
    softplus = torch.nn.functional.softplus

    def hrf(pred, target):
        fp, ft = encoder((pred - _MEAN) / _STD), encoder((target - _MEAN) / _STD)
        return sum(torch.nn.functional.mse_loss(a, b) for a, b in zip(fp, ft))

    def step():
        # Generator update (D frozen).
        for p in discriminator.parameters():
            p.requires_grad_(False)
        g_opt.zero_grad(set_to_none=True)
        pred = generator(x)
        l1 = torch.mean((1 - mask) * 10.0 * torch.abs(pred - image))
        with torch.no_grad():
            _, real_feats = discriminator(image)
        fake_logits, fake_feats = discriminator(pred)
        adv = softplus(-fake_logits).mean()
        fm = torch.stack([torch.nn.functional.mse_loss(f, r) for f, r in zip(fake_feats, real_feats)]).mean()
        loss = l1 + 10.0 * adv + 100.0 * fm + 30.0 * hrf(pred, image)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(generator.parameters(), 1.0)
        g_opt.step()
        # Discriminator update: the updated generator's second forward, R1 on reals.
        for p in discriminator.parameters():
            p.requires_grad_(True)
        d_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            pred = generator(x)
        real = image.detach().requires_grad_(True)
        real_logits, _ = discriminator(real)
        (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        gp = grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean() * 0.001
        fake_logits, _ = discriminator(pred)
        m = torch.nn.functional.interpolate(mask, size=fake_logits.shape[-2:], mode="nearest")
        d_loss = (softplus(-real_logits) + gp + m * softplus(fake_logits) + (1 - m) * softplus(-fake_logits)).mean()
        d_loss.backward()
        torch.nn.utils.clip_grad_norm_(discriminator.parameters(), 1.0)
        d_opt.step()

    return step


def make_step(model, size: int, batch: int, backward: bool | str):
    """One call of the benchmarked computation: eval-mode inference, train-mode forward+backward (L1), or
    (``backward='lama_step'``) LaMa's whole training step."""
    if backward == "lama_step":
        return lama_train_step(model, size, batch)
    x = torch.rand(batch, 4, size, size)
    if backward:
        model.train()
        target = torch.rand(batch, 3, size, size)

        def step():
            model.zero_grad(set_to_none=True)
            loss = torch.nn.functional.l1_loss(model(x), target)
            loss.backward()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)
    return step


def time_case(model, size: int, batch: int, backward: bool, repeats: int, warmup: int) -> dict:
    """Median/min/max seconds of ``repeats`` calls after ``warmup`` calls (as the idle-machine reference figures
    were taken)."""
    step = make_step(model, size, batch, backward)
    return {"framework": "torch", "model": "big_lama", "size": size, "batch": batch,
            "mode": backward if isinstance(backward, str) else ("fwd_bwd" if backward else "fwd"),
            **_timed(step, repeats, warmup),
            "threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loadavg": os.getloadavg()[0]}


def serve(model, size: int, batch: int, backward: bool) -> None:
    """Runs one step per ``step`` line on stdin and answers with its wall and CPU seconds (JSON).

    Used by ``benchmarks/model.py --compare --torch-python`` to alternate PyTorch and JAX runs.
    """
    step = make_step(model, size, batch, backward)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}), flush=True)


def _timed(step, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "cpu_median_s": statistics.median(cpu_times), "repeats": repeats}


def fft_cases(sizes, batches, channels: int, repeats: int, warmup: int):
    """Rows for benchmarks/fft_kernels.py: rfftn+irfftn round trip and the FourierUnit on (N, C, S/8, S/8)."""
    for size in sizes:
        for batch in batches:
            shape = (batch, channels, size // 8, size // 8)
            x = torch.randn(shape)
            h, w = shape[2:]

            def round_trip():
                with torch.inference_mode():
                    torch.fft.irfftn(torch.fft.rfftn(x, dim=(-2, -1), norm="ortho"), s=(h, w), dim=(-2, -1),
                                     norm="ortho")

            unit = FourierUnit(channels)
            target = torch.randn(shape)

            def unit_fwd():
                unit.eval()
                with torch.inference_mode():
                    unit(x)

            def unit_fwd_bwd():
                unit.train()
                unit.zero_grad(set_to_none=True)
                xg = x.clone().requires_grad_(True)
                torch.nn.functional.l1_loss(unit(xg), target).backward()

            nhwc = f"{batch}x{h}x{w}x{channels}"
            for name, step in (("torch_rfftn", round_trip), ("fourier_unit_fwd", unit_fwd),
                               ("fourier_unit_fwd_bwd", unit_fwd_bwd)):
                yield {"framework": "torch", "size": size, "batch": batch, "shape": nhwc, "variant": name,
                       "compile_s": None, "max_abs_err": None, **_timed(step, repeats, warmup),
                       "threads": torch.get_num_threads(), "loadavg": os.getloadavg()[0]}


def _step_kind(mode: str):
    if mode not in ("fwd", "fwd_bwd", "lama_step"):
        raise SystemExit(f"--modes: {mode!r} is not fwd, fwd_bwd or lama_step")
    return "lama_step" if mode == "lama_step" else mode == "fwd_bwd"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512", help="comma-separated square input sizes")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--modes", default="fwd", help="comma-separated: fwd, fwd_bwd, lama_step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-blocks", type=int, default=18)
    parser.add_argument("--fft", action="store_true", help="time the FFT kernels instead of the generator")
    parser.add_argument("--serve", action="store_true", help="run steps on request (benchmarks/model.py)")
    parser.add_argument("--batches", default="1", help="--fft: comma-separated batch sizes")
    parser.add_argument("--channels", type=int, default=192, help="--fft: FourierUnit channels")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.fft:
        sizes = [int(s) for s in args.sizes.split(",")]
        batches = [int(b) for b in args.batches.split(",")]
        for row in fft_cases(sizes, batches, args.channels, args.repeats, args.warmup):
            print(json.dumps(row), flush=True)
        return 0
    model = BigLama(args.n_blocks)
    if args.serve:
        serve(model, int(args.sizes), args.batch, _step_kind(args.modes))
        return 0
    for mode in args.modes.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            row = time_case(model, size, args.batch, _step_kind(mode), args.repeats, args.warmup)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
