"""Tests for jaxinpaint.io.torch_pickle: torch-free, code-free reading of PyTorch checkpoints.

The fixtures under tests/data/torch/ were written by real ``torch.save`` (tests/data/make_torch_fixtures.py,
run once with torch 2.13.0); torch itself is not needed here. Hostile pickles are crafted in the tests.
"""

import builtins
import collections
import datetime
import io
import os
import pathlib
import pickle
import pickletools
import struct
import subprocess
import sys
import types
import typing
import zipfile

import jax
import numpy as np
import pytest

from jaxinpaint.io import torch_pickle
from jaxinpaint.io.torch_pickle import GlobalRef, Placeholder, UnsafePickleError

DATA = pathlib.Path(__file__).resolve().parent / "data" / "torch"
STATE_DICT_FILES = ["state_dict_zip.pt", "state_dict_legacy.pt"]


@pytest.fixture(scope="module")
def expected():
    with np.load(DATA / "expected.npz") as npz:
        return {key: npz[key] for key in npz.files}


def _expected_group(expected, group):
    return {k.split("/", 1)[1]: v for k, v in expected.items() if k.startswith(group + "/")}


def _assert_arrays_equal(actual, wanted):
    assert list(actual) == list(wanted)
    for key, want in wanted.items():
        got = actual[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == want.dtype, (key, got.dtype, want.dtype)
        assert got.shape == want.shape, (key, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=key)


# ------------------------------------------------------------------------------------------------------------
# Files written by real torch.save
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STATE_DICT_FILES)
def test_state_dict_matches_torch_exactly(name, expected):
    sd = torch_pickle.load(DATA / name)
    assert isinstance(sd, collections.OrderedDict)
    _assert_arrays_equal(sd, _expected_group(expected, "sd"))
    # Spot checks of what the exact comparison covers.
    assert sd["1.num_batches_tracked"].shape == () and sd["1.num_batches_tracked"].dtype == np.int64
    assert int(sd["1.num_batches_tracked"]) == 1
    assert sd["bf16"].dtype == np.float32
    np.testing.assert_array_equal(sd["bf16"][:3], [1.0, -2.5, 3.140625])  # exact in bfloat16
    assert abs(sd["bf16"][3] / 1e30 - 1) < 2**-8  # 1e30 rounded to bfloat16's 8-bit mantissa
    assert sd["u16"].dtype == np.uint16 and sd["u16"].tolist() == [1, 65535]
    np.testing.assert_array_equal(sd["conj"], np.array([1 - 2j, 3 + 4j], np.complex64))
    # BUILD on the OrderedDict restored state_dict()'s `_metadata` attribute.
    assert sd._metadata[""]["version"] == 1


@pytest.mark.parametrize("name", STATE_DICT_FILES)
def test_views_of_one_storage(name):
    sd = torch_pickle.load(DATA / name)
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(sd["base"], base)
    np.testing.assert_array_equal(sd["base_t"], base.T)
    np.testing.assert_array_equal(sd["base_slice"], base[1:, ::2])
    np.testing.assert_array_equal(sd["expanded"], [[1, 2, 3], [1, 2, 3]])
    assert sd["empty"].shape == (0, 3)
    for key in ("base", "base_t", "base_slice", "expanded", "bf16", "half"):
        assert sd[key].flags.writeable and sd[key].flags.c_contiguous, key


def test_lightning_checkpoint_weights_and_metadata(expected):
    ckpt = torch_pickle.load(DATA / "lightning_like.ckpt")
    assert ckpt["epoch"] == 3 and ckpt["global_step"] == 1234
    _assert_arrays_equal(ckpt["state_dict"], _expected_group(expected, "ckpt"))
    adam = ckpt["optimizer_states"][0]
    np.testing.assert_array_equal(adam["state"][0]["exp_avg"], expected["ckpt_adam/exp_avg_0"])
    assert adam["param_groups"][0]["betas"] == (0.9, 0.999)

    hparams = ckpt["hyper_parameters"]  # a dict subclass: NEWOBJ + SETITEMS on a placeholder
    assert isinstance(hparams, Placeholder)
    assert (hparams.module, hparams.name) == ("pytorch_lightning.utilities.parsing", "AttributeDict")
    mode = hparams.dictitems["mode"]  # Enum member: REDUCE(class, (value,))
    assert (mode.module, mode.name, mode.args) == ("omegaconf.base", "SCMode", (1,))
    any_type = hparams.dictitems["kind"]  # typing.Any used as a value: the placeholder class itself
    assert issubclass(any_type, Placeholder) and (any_type.module, any_type.name) == ("typing", "Any")
    assert hparams.dictitems["object_type"] is dict

    config = hparams.dictitems["config"]
    assert (config.module, config.name) == ("omegaconf.dictconfig", "DictConfig")
    meta = config.state["_metadata"]
    assert meta.name == "ContainerMetadata" and meta.state["object_type"] is dict
    assert meta.state["flags"]["mode"].args == (2,)
    ngf = config.state["_content"]["generator"].state["_content"]["ngf"]
    assert (ngf.module, ngf.name) == ("omegaconf.nodes", "AnyNode") and ngf.state["_val"] == 64
    assert ngf.state["_parent"].state["_parent"] is config  # reference cycles survive
    assert ngf.state["_metadata"].state["ref_type"] is any_type  # one placeholder class per global
    assert "omegaconf.dictconfig.DictConfig" in repr(hparams)  # repr copes with the cycles

    extra = ckpt["extra"]
    assert extra["namespace"].state == {"lr": 1e-3, "name": "lama"}
    assert type(extra["np_float"]) is np.float64 and extra["np_float"] == 0.5
    assert type(extra["np_int"]) is np.int64 and extra["np_int"] == 3
    np.testing.assert_array_equal(extra["np_array"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert extra["device"] == "cpu" and extra["dtype"] == "torch.float16"
    assert extra["path"].args == ("/", "data", "places")
    assert extra["set"] == {1, 2} and extra["bytes"] == b"\x00\xffraw"


def test_load_state_dict_lightning_prefixes(expected):
    path = DATA / "lightning_like.ckpt"
    ckpt_sd = _expected_group(expected, "ckpt")
    _assert_arrays_equal(torch_pickle.load_state_dict(path), ckpt_sd)
    for prefix in ("generator.", "discriminator.", "loss_resnet_pl."):
        wanted = {k[len(prefix):]: v for k, v in ckpt_sd.items() if k.startswith(prefix)}
        assert wanted
        _assert_arrays_equal(torch_pickle.load_state_dict(path, prefix=prefix), wanted)
    with pytest.raises(ValueError) as info:
        torch_pickle.load_state_dict(path, prefix="generatr.")
    message = str(info.value)
    assert "lightning_like.ckpt" in message and "'generatr.'" in message
    for present in ("'generator.'", "'discriminator.'", "'loss_resnet_pl.'"):
        assert present in message


def test_load_state_dict_plain_file_and_npz(tmp_path, expected):
    sd = torch_pickle.load_state_dict(DATA / "state_dict_legacy.pt", prefix="1.")
    assert sorted(sd) == ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"]
    arrays = {"a.w": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.array(3, np.int64)}
    for suffix in (".npz", ".pth"):  # recognised by content, not by name
        np.savez(tmp_path / "w.npz", **arrays)
        os.replace(tmp_path / "w.npz", tmp_path / f"weights{suffix}")
        _assert_arrays_equal(torch_pickle.load_state_dict(tmp_path / f"weights{suffix}"), arrays)
    assert list(torch_pickle.load_state_dict(tmp_path / "weights.npz", prefix="a.")) == ["w"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_with_model_wrapper(tmp_path, protocol):
    """jax-fid style plain pickles of numpy arrays, and the {'model': state_dict} wrapper."""
    arrays = {"conv.weight": np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32),
              "conv.bias": np.arange(2, dtype=np.int32), "note": "dropped: not a tensor"}
    path = tmp_path / "plain.pickle"
    path.write_bytes(pickle.dumps({"model": arrays, "epoch": 1}, protocol=protocol))
    sd = torch_pickle.load_state_dict(path)
    assert list(sd) == ["conv.weight", "conv.bias"]
    np.testing.assert_array_equal(sd["conv.weight"], arrays["conv.weight"])
    np.testing.assert_array_equal(sd["conv.bias"], arrays["conv.bias"])


class _Items(list):
    """A list subclass: pickled as NEWOBJ + APPENDS, which land on a placeholder."""


@pytest.mark.parametrize("protocol", [2, 4])
def test_python_values_found_in_checkpoint_metadata(tmp_path, protocol):
    """Values Lightning/OmegaConf/argparse configs may hold load as data (placeholders or plain values)."""
    value = {
        "when": datetime.datetime(2021, 8, 1, 12, 30),
        # Pickled as operator.getitem(typing.Union, (int, NoneType)): recorded, never called.
        "optional": typing.Optional[int],  # noqa: UP045
        "ns": types.SimpleNamespace(a=1),
        "queue": collections.deque([1, 2], maxlen=5),
        "groups": collections.defaultdict(list, {"a": [1]}),
        "items": _Items(["x", "y"]),
        "none_type": type(None),
        "empty_bytes": b"",
        "frozen": frozenset({3}),
        "np_half": np.float16(1.5),
    }
    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    loaded = torch_pickle.load(path)
    assert loaded["when"].module == "datetime" and loaded["when"].name == "datetime"
    optional = loaded["optional"]
    assert optional.module in ("operator", "_operator") and optional.name == "getitem"
    assert optional.args[0].name == "Union" and optional.args[1] == (int, type(None))  # Optional[int]
    assert loaded["ns"].name == "SimpleNamespace"
    assert loaded["queue"].listitems == [1, 2] and loaded["queue"].args[1] == 5  # (items via APPENDS, maxlen)
    assert loaded["groups"] == {"a": [1]} and loaded["groups"].default_factory is list
    assert loaded["items"].name == "_Items" and loaded["items"].listitems == ["x", "y"]
    assert loaded["none_type"] is type(None) and loaded["empty_bytes"] == b""
    assert loaded["frozen"] == frozenset({3})
    assert type(loaded["np_half"]) is np.float16 and loaded["np_half"] == 1.5
    # Checkpoints written under numpy 1.x name numpy.core.multiarray instead of numpy._core.multiarray.
    path.write_bytes(pickle.dumps(np.arange(3.0), protocol=2).replace(b"numpy._core", b"numpy.core"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    np.testing.assert_array_equal(torch_pickle.load(path), [0.0, 1.0, 2.0])


# ------------------------------------------------------------------------------------------------------------
# Hand-made torch-layout files (layouts torch itself rarely writes)
# ------------------------------------------------------------------------------------------------------------


def _stub_rebuild_tensor_v2(*args):
    raise AssertionError("placeholder global; renamed in the pickle bytes")


class _StubFloatStorage:
    pass


class _Storage:
    def __init__(self, key, numel, view=None):
        self.key, self.numel, self.view = key, numel, view


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return _stub_rebuild_tensor_v2, self.args


def _torch_pickle_bytes(obj, legacy=False):
    """Pickle ``obj`` the way torch does, with the stub globals renamed to torch's names."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, item):
            if isinstance(item, _Storage):
                pid = ("storage", _StubFloatStorage, item.key, "cpu", item.numel)
                return pid + (item.view,) if legacy else pid
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    module = _Tensor.__module__.encode()
    return (buffer.getvalue()
            .replace(b"c" + module + b"\n_stub_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor_v2\n")
            .replace(b"c" + module + b"\n_StubFloatStorage\n", b"ctorch\nFloatStorage\n"))


def _write_torch_zip(path, data_pkl, records=(), byteorder=b"little"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/data.pkl", data_pkl)
        archive.writestr("weights/byteorder", byteorder)
        for key, payload in records:
            archive.writestr(f"weights/data/{key}", payload)
        archive.writestr("weights/version", b"3\n")


def _write_legacy(path, data_pkl, keys, payloads):
    parts = [pickle.dumps(torch_pickle.LEGACY_MAGIC_NUMBER, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2), data_pkl,
             pickle.dumps(keys, protocol=2)]
    for payload, itemsize in payloads:
        parts += [struct.pack("<q", len(payload) // itemsize), payload]
    path.write_bytes(b"".join(parts))


def test_big_endian_zip(tmp_path):
    storage = _Storage("0", 6)
    tensors = {"w": _Tensor(storage, 0, (2, 3), (3, 1)), "t": _Tensor(storage, 1, (2,), (3,))}
    data = _torch_pickle_bytes(tensors)
    path = tmp_path / "big.pt"
    _write_torch_zip(path, data, [("0", np.arange(6, dtype=">f4").tobytes())], byteorder=b"big")
    sd = torch_pickle.load(path)
    np.testing.assert_array_equal(sd["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(sd["t"], [1.0, 4.0])
    assert sd["w"].dtype == np.float32 and sd["w"].dtype.isnative


def test_legacy_storage_views(tmp_path):
    """Old torch wrote storage views as ('storage', type, root_key, location, numel, view_metadata)."""
    root = _Storage("root", 8)
    view = _Storage("root", 8, view=("v1", 2, 4))
    data = _torch_pickle_bytes({"all": _Tensor(root, 0, (8,), (1,)), "view": _Tensor(view, 1, (3,), (1,))},
                               legacy=True)
    path = tmp_path / "legacy_views.pt"
    _write_legacy(path, data, ["root"], [(np.arange(8, dtype="<f4").tobytes(), 4)])
    sd = torch_pickle.load(path)
    np.testing.assert_array_equal(sd["all"], np.arange(8))
    np.testing.assert_array_equal(sd["view"], [3.0, 4.0, 5.0])  # view starts at element 2, tensor offset 1


@pytest.mark.parametrize("case", ["out_of_bounds", "missing_record", "short_record"])
def test_corrupt_storages_are_reported(tmp_path, case):
    size = (4, 4) if case == "out_of_bounds" else (2, 3)
    data = _torch_pickle_bytes({"w": _Tensor(_Storage("0", 6), 0, size, (size[1], 1))})
    payload = np.zeros(6, "<f4").tobytes()
    records = {"out_of_bounds": [("0", payload)], "missing_record": [],
               "short_record": [("0", payload[:10])]}[case]
    path = tmp_path / "bad.pt"
    _write_torch_zip(path, data, records)
    with pytest.raises(ValueError, match="bad.pt") as info:
        torch_pickle.load(path)
    assert not isinstance(info.value, UnsafePickleError)
    assert {"out_of_bounds": "storage holding 6", "missing_record": "no record 'weights/data/0'",
            "short_record": "holds 10 bytes"}[case] in str(info.value)


# ------------------------------------------------------------------------------------------------------------
# Hostile pickles: refused, and their side effect never happens
# ------------------------------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as ``func(*args)``, whatever func is."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker):
    """{attack: (pickle bytes, text the refusal must contain)}; each payload touches ``marker``."""
    # getattr(__import__('os'), 'system')('touch marker'), written as protocol-0 opcodes after PROTO 2.
    getattr_chain = (b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V"
                     + f"touch {marker}".encode() + b"\ntR.")
    system = _Reduce(os.system, f"touch {marker}")
    return {
        "os.system": (pickle.dumps(system, protocol=2), "system"),
        "builtins.eval": (pickle.dumps(_Reduce(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
                                       protocol=2), "builtins.eval"),
        "subprocess.Popen": (pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(marker)]), protocol=4),
                             "subprocess.Popen"),
        "getattr_chain": (getattr_chain, "builtins.getattr"),
        "nested_in_state_dict": (pickle.dumps({"w": np.zeros(2), "x": [system]}, protocol=2), "system"),
    }


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "subprocess.Popen", "getattr_chain",
                                    "nested_in_state_dict"])
@pytest.mark.parametrize("container", ["plain", "torch_zip", "legacy"])
def test_malicious_pickles_are_refused(tmp_path, attack, container):
    marker = tmp_path / "pwned"
    payload, named = _payloads(marker)[attack]
    path = tmp_path / "evil.pt"
    if container == "plain":
        path.write_bytes(payload)
    elif container == "torch_zip":
        _write_torch_zip(path, payload)
    else:
        _write_legacy(path, payload, [], [])
    for reader in (torch_pickle.load, torch_pickle.load_state_dict):
        with pytest.raises(UnsafePickleError) as info:
            reader(path)
        assert str(path) in str(info.value) and named in str(info.value)
        assert not marker.exists()
    # Control: the payload is live, plain pickle really runs it.
    if container == "plain":
        result = pickle.loads(payload)
        if isinstance(result, subprocess.Popen):
            result.wait()
        assert marker.exists()


def _touch(path):
    pathlib.Path(path).touch()


class MarkerOnInit:
    """A class-like global: reading a pickle that constructs it must not run its code."""

    def __init__(self, path):
        _touch(path)

    def __setstate__(self, state):
        _touch(state["path"])


def test_unknown_function_call_refused_but_classes_become_placeholders(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "f.pt"
    path.write_bytes(pickle.dumps({"w": np.ones(1), "x": _Reduce(_touch, str(marker))}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"tries to call [\w.]*test_torch_pickle\._touch"):
        torch_pickle.load(path)
    assert not marker.exists()

    obj = MarkerOnInit.__new__(MarkerOnInit)
    obj.__dict__["path"] = str(marker)
    path.write_bytes(pickle.dumps({"init": _Reduce(MarkerOnInit, str(marker)), "state": obj}, protocol=2))
    loaded = torch_pickle.load(path)
    assert not marker.exists()
    assert loaded["init"].name == "MarkerOnInit" and loaded["init"].args == (str(marker),)
    assert loaded["state"].state == {"path": str(marker)}

    # A function kept as a plain value loads as an inert reference that refuses to be called.
    path.write_bytes(pickle.dumps({"hook": _touch}, protocol=2))
    hook = torch_pickle.load(path)["hook"]
    assert isinstance(hook, GlobalRef) and hook.name == "_touch"
    with pytest.raises(UnsafePickleError):
        hook(str(marker))
    assert not marker.exists()


def test_dangerous_global_refused_even_as_a_value(tmp_path):
    path = tmp_path / "ref.pt"
    path.write_bytes(pickle.dumps({"f": os.system}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        torch_pickle.load(path)


def test_allow_listed_globals_cannot_be_altered_by_a_file(tmp_path):
    """BUILD on an allow-listed function would otherwise mutate it for every later load."""
    path = tmp_path / "build.pt"
    path.write_bytes(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(dV__defaults__\n(I1\ntsb.")
    with pytest.raises(UnsafePickleError, match="set state"):
        torch_pickle.load(path)
    sd = torch_pickle.load(DATA / "state_dict_zip.pt")
    np.testing.assert_array_equal(sd["base"], np.arange(12, dtype=np.float32).reshape(3, 4))


# ------------------------------------------------------------------------------------------------------------
# Not a checkpoint / damaged files
# ------------------------------------------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path):
    for reader in (torch_pickle.load, torch_pickle.load_state_dict):
        with pytest.raises(FileNotFoundError, match="nope.ckpt"):
            reader(tmp_path / "nope.ckpt")
        with pytest.raises(IsADirectoryError, match="is a directory"):
            reader(tmp_path)


@pytest.mark.parametrize("content, says", [
    (b"", "is empty"),
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title>", "HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
    (b"generator:\n  kind: ffc_resnet\n", "text file starting with 'generator:"),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'", ".npy array"),
    (b"\x00\x01\x02\x03garbage", "unrecognised binary data"),
])
def test_not_a_torch_file(tmp_path, content, says):
    path = tmp_path / "best.ckpt"
    path.write_bytes(content)
    for reader in (torch_pickle.load, torch_pickle.load_state_dict):
        with pytest.raises(ValueError, match="best.ckpt") as info:
            reader(path)
        assert says in str(info.value)


def test_npz_given_to_load(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="NumPy .npz archive"):
        torch_pickle.load(tmp_path / "w.npz")


@pytest.mark.parametrize("name", STATE_DICT_FILES)
def test_truncated_files(tmp_path, name):
    blob = (DATA / name).read_bytes()
    path = tmp_path / name
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated") as info:
        torch_pickle.load_state_dict(path)
    assert name in str(info.value)


def test_non_state_dict_contents(tmp_path):
    path = tmp_path / "list.pt"
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        torch_pickle.load_state_dict(path)
    path.write_bytes(pickle.dumps({"epoch": 3, "lr": 0.1}, protocol=2))
    with pytest.raises(ValueError, match="holds no tensors.*'epoch'"):
        torch_pickle.load_state_dict(path)


# ------------------------------------------------------------------------------------------------------------
# TorchScript: IOPaint's / lama-cleaner's big-lama.pt layout, read as data
# ------------------------------------------------------------------------------------------------------------

TORCHSCRIPT = DATA / "big_lama_layout_torchscript.pt"
TORCHSCRIPT_SD = DATA / "big_lama_layout_state_dict.pt"  # torch.save of the same module's state_dict()


def _plant(archive, out, marker):
    """Copies a TorchScript archive, planting two side effects: an object whose construction touches
    ``marker``, added to the root module's attributes in data.pkl, and a shell command in its code files."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                build = [pos for op, _, pos in pickletools.genops(data) if op.name == "BUILD"][-1]  # the root's
                payload = (b"X" + struct.pack("<I", 7) + b"planted" + f"c{__name__}\nMarkerOnInit\n(V{marker}\ntR"
                           .encode() + b"s")
                data = data[:build] + payload + data[build:]
            elif "/code/" in info.filename and info.filename.endswith(".py"):
                data = f"import os\nos.system('touch {marker}')\n".encode() + data
            dst.writestr(info, data)
    return payload


def test_torchscript_big_lama_converts_and_loads_without_running_code(tmp_path):
    import jaxinpaint
    from jaxinpaint.cli import convert as convert_cli
    from jaxinpaint.io import checkpoint

    marker = tmp_path / "pwned"
    archive = tmp_path / "big-lama.pt"
    payload = _plant(TORCHSCRIPT, archive, marker)
    sd = torch_pickle.load_state_dict(archive)
    assert not marker.exists()
    want = torch_pickle.load_state_dict(TORCHSCRIPT_SD)  # the same weights, written by torch.save
    _assert_arrays_equal({k: sd[k] for k in want}, want)
    assert set(sd) == set(want) and next(iter(sd)).startswith("model.generator.model.1.")
    root = torch_pickle.load(archive)
    assert torch_pickle.is_torchscript_module(root) and root.state["planted"].name == "MarkerOnInit"

    assert convert_cli.main([str(archive), str(tmp_path / "converted")]) == 0
    assert convert_cli.main([str(TORCHSCRIPT_SD), str(tmp_path / "from_state_dict")]) == 0
    assert not marker.exists()
    converted, reference = (checkpoint.load_variables(tmp_path / d) for d in ("converted", "from_state_dict"))
    jax.tree.map(np.testing.assert_array_equal, converted, reference)
    with jax.disable_jit():  # tiny model: skip compiling
        model = jaxinpaint.load(str(tmp_path / "converted"))
        image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
        hole = np.zeros((16, 24), bool)
        hole[4:10, 6:18] = True
        out = model.inpaint(image, hole)
    assert out.shape == image.shape and np.array_equal(out[~hole], image[~hole])
    # Control: the planted object is live; plain pickle runs it.
    pickle.loads(b"\x80\x02" + payload[len(b"X") + 4 + 7:-1] + b".")
    assert marker.exists()


def test_torchscript_written_by_live_torch(tmp_path):
    """Where PyTorch is installed (the optional [torch] extra), a freshly traced archive reads the same."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(DATA.parent))
    try:
        import make_torchscript_fixture
    finally:
        sys.path.pop(0)
    archive, state_dict = make_torchscript_fixture.write(tmp_path, seed=3)
    sd = torch_pickle.load_state_dict(archive)
    for key, value in torch.load(state_dict, weights_only=True).items():
        np.testing.assert_array_equal(sd[key], value.numpy(), err_msg=key)
    assert len(sd) == len(torch.jit.load(str(archive)).state_dict())
