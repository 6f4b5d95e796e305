"""Write ``tests/data/torch/big_lama_layout_torchscript.pt``: a TorchScript archive laid out like IOPaint's /
lama-cleaner's ``big-lama.pt``, and its state dict saved by ``torch.save`` (``..._state_dict.pt``).

IOPaint caches LaMa as the output of LaMa's ``bin/to_jit.py``: ``torch.jit.trace`` of a ``JITWrapper`` whose
``model`` is the Lightning training module, whose ``generator`` is ``FFCResNetGenerator``; the archive's
tensors are therefore keyed ``model.generator.model.<i>...`` as in the original ``best.ckpt``. This script
builds a *tiny* generator with exactly the original's module names and nesting (``model.1.ffc.convl2l``,
``model.<i>.conv1.ffc.convg2g.fu.conv_layer``, the up-sampling ``ConvTranspose2d``/``BatchNorm2d`` and the
7x7 head) and random weights, traces the wrapper and saves it with ``torch.jit.save``. Its forward pass only
has to touch every parameter for the trace; the test compares weights (the TorchScript path against the
plain state dict of the same module), not LaMa's arithmetic, which the reference fixtures already check.

PyTorch is needed only here (and by the optional live test), never by the library. Run it once when the
fixture must change, from a throw-away environment::

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python tests/data/make_torchscript_fixture.py [OUT_DIR]
"""

import pathlib
import sys

import torch
from torch import nn

OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent / "torch"
NGF, N_DOWN, N_BLOCKS, RATIO = 4, 2, 1, 0.75


class FourierUnit(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv_layer = nn.Conv2d(2 * channels, 2 * channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * channels)


class SpectralTransform(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, cout // 2, 1, bias=False), nn.BatchNorm2d(cout // 2), nn.ReLU())
        self.fu = FourierUnit(cout // 2)
        self.conv2 = nn.Conv2d(cout // 2, cout, 1, bias=False)


class FFC(nn.Module):
    """The original's four paths; a path with zero channels on either side does not exist."""

    def __init__(self, cin, cout, kernel, ratio_in, ratio_out, stride=1):
        super().__init__()
        in_g, out_g = int(cin * ratio_in), int(cout * ratio_out)
        in_l, out_l = cin - in_g, cout - out_g
        pad = (kernel - 1) // 2

        def conv(i, o):
            return nn.Conv2d(i, o, kernel, stride, pad, padding_mode="reflect", bias=False) if i and o else None

        self.convl2l, self.convl2g, self.convg2l = conv(in_l, out_l), conv(in_l, out_g), conv(in_g, out_l)
        self.convg2g = SpectralTransform(in_g, out_g) if in_g and out_g else None
        self.out_l, self.out_g = out_l, out_g


class FFCBnAct(nn.Module):
    def __init__(self, cin, cout, kernel, ratio_in, ratio_out, stride=1):
        super().__init__()
        self.ffc = FFC(cin, cout, kernel, ratio_in, ratio_out, stride)
        self.bn_l = nn.BatchNorm2d(self.ffc.out_l) if self.ffc.out_l else None
        self.bn_g = nn.BatchNorm2d(self.ffc.out_g) if self.ffc.out_g else None


class FFCResnetBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv1 = FFCBnAct(dim, dim, 3, RATIO, RATIO)
        self.conv2 = FFCBnAct(dim, dim, 3, RATIO, RATIO)


class FFCResNetGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), FFCBnAct(4, NGF, 7, 0, 0)]
        for i in range(N_DOWN):
            mult = 2 ** i
            layers.append(FFCBnAct(NGF * mult, NGF * mult * 2, 3, 0, RATIO if i == N_DOWN - 1 else 0, stride=2))
        dim = NGF * 2 ** N_DOWN
        layers += [FFCResnetBlock(dim) for _ in range(N_BLOCKS)]
        layers.append(nn.Identity())  # ConcatTupleLayer
        for i in range(N_DOWN):
            mult = 2 ** (N_DOWN - i)
            layers += [nn.ConvTranspose2d(NGF * mult, NGF * mult // 2, 3, 2, 1, output_padding=1),
                       nn.BatchNorm2d(NGF * mult // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(NGF, 3, 7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)


class TrainingModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.generator = FFCResNetGenerator()


class JITWrapper(nn.Module):
    """LaMa's bin/to_jit.py wrapper; the forward touches every parameter so the trace keeps them all."""

    def __init__(self):
        super().__init__()
        self.model = TrainingModule()

    def forward(self, image, mask):
        total = image.mean() + mask.mean()
        for p in self.model.parameters():
            total = total + p.float().mean()
        for b in self.model.buffers():
            total = total + b.float().mean()
        return image * (1 - mask) + total * mask


def build(seed: int = 0) -> JITWrapper:
    torch.manual_seed(seed)
    wrapper = JITWrapper().eval()
    with torch.no_grad():
        for name, b in wrapper.named_buffers():
            if name.endswith("running_mean"):
                b.normal_()
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    return wrapper


def write(out: pathlib.Path, seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes the traced archive and the plain state dict of the same weights; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    wrapper = build(seed)
    traced = torch.jit.trace(wrapper, (torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)))
    archive, state_dict = out / "big_lama_layout_torchscript.pt", out / "big_lama_layout_state_dict.pt"
    torch.jit.save(traced, str(archive))
    torch.save(wrapper.state_dict(), str(state_dict))
    return archive, state_dict


if __name__ == "__main__":
    for path in write(OUT):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
