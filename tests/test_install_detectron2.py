"""tools/install_detectron2.py turns the cp310 sal-detectron2 wheel into a pure-Python one."""
import csv
import io
import zipfile
from pathlib import Path

import subprocess
import sys


TOOL = Path(__file__).resolve().parents[1] / "tools" / "install_detectron2.py"
sys.path.insert(0, str(TOOL.parent))
from install_detectron2 import NUMPY2_FIXES  # noqa: E402


def _fake_wheel(src, info, fixes=NUMPY2_FIXES):
    with zipfile.ZipFile(src, "w") as z:
        for name, old, _ in fixes:
            z.writestr(name, f"import numpy as np\nx = {old}\n")
        z.writestr("detectron2/__init__.py", "__version__ = '0.7.2'\n")
        z.writestr("detectron2/_C.cpython-310-x86_64-linux-gnu.so", b"\x7fELF")
        z.writestr("tools/train_net.py", "print('shadowing tools')\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp310-cp310-linux_x86_64\n")
        z.writestr(f"{info}/top_level.txt", "detectron2\ntools\n")
        z.writestr(f"{info}/RECORD", "stale\n")


def test_pure_python_wheel(tmp_path):
    src = tmp_path / "sal_detectron2-0.7.2-cp310-none-any.whl"
    info = "sal_detectron2-0.7.2.dist-info"
    _fake_wheel(src, info)
    run = subprocess.run([sys.executable, str(TOOL), "--repack", str(src), str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = run.stdout.strip()
    assert Path(out).name == "sal_detectron2-0.7.2-py3-none-any.whl"
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert "detectron2/__init__.py" in names
        assert not any(n.startswith("tools/") or n.endswith(".so") for n in names)
        wheel = z.read(f"{info}/WHEEL").decode()
        assert "Tag: py3-none-any" in wheel and "Root-Is-Purelib: true" in wheel
        assert z.read(f"{info}/top_level.txt") == b"detectron2\n"
        record = {row[0]: row for row in csv.reader(io.StringIO(z.read(f"{info}/RECORD").decode()))}
        assert set(record) == names
        init = z.read("detectron2/__init__.py")
        assert record["detectron2/__init__.py"][2] == str(len(init))
        for name, old, new in NUMPY2_FIXES:  # numpy-2-safe calls, nothing else changed
            assert z.read(name).decode() == f"import numpy as np\nx = {new}\n"


def test_repack_refuses_a_wheel_without_the_numpy2_calls(tmp_path):
    src = tmp_path / "sal_detectron2-0.7.3-cp310-none-any.whl"
    _fake_wheel(src, "sal_detectron2-0.7.3.dist-info", NUMPY2_FIXES[:1])
    run = subprocess.run([sys.executable, str(TOOL), "--repack", str(src), str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "update NUMPY2_FIXES" in run.stderr
