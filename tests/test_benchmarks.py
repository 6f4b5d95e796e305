"""The device benchmark's CPU dry run: forward, generator step and the full LaMa trainer step on tiny sizes, with
img/s and XLA FLOPs reported (``benchmarks/device.py --dry_run``). Run in-process to share JAX's start-up; the
bfloat16 generator step is left out (its mixed-precision path is the trainer's, which runs in both dtypes)."""

import importlib.util
import json
import subprocess
import sys

from conftest import REPO


def _device_module():
    spec = importlib.util.spec_from_file_location("device_benchmark", REPO / "benchmarks" / "device.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_device_benchmark_dry_run(tmp_path, capsys):
    device = _device_module()
    runs = [(["--cases", "fwd,trainer", "--dtypes", "float32,bfloat16"], {"fwd", "trainer"}, {"float32", "bfloat16"}),
            (["--cases", "gstep", "--dtypes", "float32"], {"gstep"}, {"float32"})]
    for i, (flags, cases, dtypes) in enumerate(runs):
        out = tmp_path / f"device{i}.json"
        assert device.main(["--dry_run", "--repeats", "1", "--json", str(out), *flags]) == 0
        rows = json.loads(out.read_text())["rows"]
        assert {(r["case"], r["dtype"]) for r in rows} == {(c, d) for c in cases for d in dtypes}
        for row in rows:
            assert "error" not in row, row
            assert row["img_per_s"] > 0 and row["gflop"] > 0
    printed = capsys.readouterr().out
    assert "MFU" in printed and "img/s" in printed


def test_device_benchmark_help():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--dry_run" in proc.stdout and "MFU" in proc.stdout
