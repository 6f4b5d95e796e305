"""Reads the Caffe VGG-19 MSNPS uses (``VGG_ILSVRC_19_layers.caffemodel``) without Caffe or protobuf.

    python -m jaxinpaint.systems.msnps.caffe_vgg VGG_ILSVRC_19_layers.caffemodel vgg19_caffe.npz

writes the conv weights as a ``.npz`` in torchvision's key layout (``features.<i>.weight`` OIHW, ``.bias``),
which ``jaxinpaint.backbones.vgg.load`` and the solver's ``vgg_weights`` read. ``vgg_weights`` also takes the
``.caffemodel`` itself (parsed on every load, about a second per 500 MB).

Why a hand-written reader: the file is a protobuf ``NetParameter``, and neither Caffe nor its generated
``caffe_pb2`` is a dependency. Only the few fields that hold weights are decoded from the wire format
(``caffe.proto``): ``NetParameter.layer`` (100, ``LayerParameter``: name 1, blobs 7) or the old
``NetParameter.layers`` (2, ``V1LayerParameter``: name 4, blobs 6), which the 2014 VGG file uses; ``BlobProto``:
num/channels/height/width 1-4, data 5 (packed or not), shape 7 (``BlobShape.dim`` 1), double_data 8. Every
other field is skipped by its wire type. Convolutions are recognised by their names ``conv<b>_<i>`` and taken
in network order; Caffe's weights are (out, in, kh, kw) like PyTorch's, and the first layer's input channels
are **BGR**, which is what MSNPS's Caffe preprocessing feeds (so no channel flip here).
"""

from __future__ import annotations

import re
import sys
from typing import Iterator

import numpy as np

from jaxinpaint.backbones import vgg


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: ints for varints/fixed, memoryviews for bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _blob(buf: memoryview) -> np.ndarray:
    legacy = {1: 1, 2: 1, 3: 1, 4: 1}
    shape: list[int] = []
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    for number, wire, value in fields(buf):
        if number in legacy and wire == 0:
            legacy[number] = int(value)
        elif number == 5:
            floats.append(np.frombuffer(value, "<f4") if wire == 2 else np.frombuffer(value, "<f4", count=1))
        elif number == 8:
            doubles.append(np.frombuffer(value, "<f8") if wire == 2 else np.frombuffer(value, "<f8", count=1))
        elif number == 7 and wire == 2:
            for n2, w2, v2 in fields(value):
                if n2 == 1 and w2 == 2:  # packed int64 dims
                    pos, sub = 0, v2
                    while pos < len(sub):
                        d, pos = _varint(sub, pos)
                        shape.append(d)
                elif n2 == 1 and w2 == 0:
                    shape.append(int(v2))
    data = np.concatenate(floats) if floats else (np.concatenate(doubles).astype(np.float32) if doubles else
                                                  np.zeros((0,), np.float32))
    dims = shape or [legacy[1], legacy[2], legacy[3], legacy[4]]
    if int(np.prod(dims)) != data.size:
        raise ValueError(f"a blob of shape {dims} holds {data.size} values")
    return data.astype(np.float32).reshape(dims)


def read_layers(path: str) -> dict[str, list[np.ndarray]]:
    """``{layer name: [blobs]}`` of every layer with blobs, in file order."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    layers: dict[str, list[np.ndarray]] = {}
    try:
        for number, wire, value in fields(buf):
            if wire != 2 or number not in (2, 100):
                continue
            name_field, blob_field = (4, 6) if number == 2 else (1, 7)
            name, blobs = None, []
            for n2, w2, v2 in fields(value):
                if n2 == name_field and w2 == 2:
                    name = bytes(v2).decode("utf-8", "replace")
                elif n2 == blob_field and w2 == 2:
                    blobs.append(_blob(v2))
            if name is not None and blobs:
                layers[name] = blobs
    except ValueError as e:
        raise ValueError(f"{path}: not a readable Caffe model ({e})") from e
    return layers


def torchvision_state_dict(path: str) -> dict[str, np.ndarray]:
    """The VGG-19 convs of a caffemodel as torchvision ``features.<i>.weight`` / ``.bias`` arrays."""
    layers = read_layers(path)
    convs = [n for n in layers if re.fullmatch(r"conv\d_\d", n)]
    expected = list(vgg.conv_names(19))
    if convs != expected:
        raise ValueError(f"{path}: expected the VGG-19 convolutions {expected[0]}..{expected[-1]} in order, found "
                         f"{convs or 'none'} (is this VGG_ILSVRC_19_layers.caffemodel?)")
    sd = {}
    for name, index in zip(expected, vgg.torchvision_conv_indices(19)):
        weight, bias = layers[name][:2]
        sd[f"features.{index}.weight"] = weight
        sd[f"features.{index}.bias"] = bias.reshape(-1)
    return sd


def load(path: str) -> dict:
    """Flax variables of ``jaxinpaint.backbones.vgg.Model(depth=19)`` from a caffemodel."""
    return vgg.variables_from_torchvision(torchvision_state_dict(path), source=path, depth=19)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m jaxinpaint.systems.msnps.caffe_vgg IN.caffemodel OUT.npz", file=sys.stderr)
        return 2
    np.savez(argv[1], **torchvision_state_dict(argv[0]))
    print(f"wrote {argv[1]} (VGG-19 convolutions, torchvision layout, BGR input as Caffe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
