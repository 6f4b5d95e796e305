"""The device benchmark's CPU dry run: every case (forward, generator step, full LaMa trainer step) in both
dtypes on tiny sizes, with img/s and XLA FLOPs reported (``benchmarks/device.py --dry_run``)."""

import json
import subprocess
import sys

from conftest import REPO


def test_device_benchmark_dry_run(tmp_path):
    out = tmp_path / "device.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device.py"), "--dry_run", "--repeats", "1",
                           "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["case"], r["dtype"]) for r in rows} == {(c, d) for c in ("fwd", "gstep", "trainer")
                                                       for d in ("float32", "bfloat16")}
    for row in rows:
        assert "error" not in row, row
        assert row["img_per_s"] > 0 and row["gflop"] > 0
    assert "MFU" in proc.stdout and "img/s" in proc.stdout


def test_device_benchmark_help():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--dry_run" in proc.stdout and "MFU" in proc.stdout
