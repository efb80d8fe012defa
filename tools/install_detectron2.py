#!/usr/bin/env python
"""Install detectron2's Python package into the running interpreter, or keep the one it has.

detectron2's authors do not publish it on PyPI and these machines reach only PyPI, so we take
upstream detectron2's Python package from the PyPI distribution ``sal-detectron2==0.7.2``.
That wheel is tagged ``cp310`` and ships a compiled ``detectron2/_C`` built for CUDA 12 and an
older torch, which cannot load next to torch 2.14. We therefore install only its pure-Python
part: drop ``detectron2/_C*.so`` and the top-level ``tools`` package (it would shadow other
``tools`` modules), retag the wheel ``py3-none-any``, and ``pip install`` it. detectron2's
command-line tools (``lazyconfig_train_net.py``, ``analyze_model.py``, ...) are kept as plain
scripts in ``<venv>/share/detectron2/tools`` (:data:`TOOLS_DIR`).

Two calls of detectron2 0.7.2 fail under numpy 2 (``np.array(..., copy=False)`` raises "Unable
to avoid copy" there; SemSegEvaluator, and with it the panoptic quickstart's evaluation, stops):
the repack rewrites them as numpy's migration guide says (:data:`NUMPY2_FIXES`, the same values
under numpy 1), so that GPU machines keep their numpy 2.

Without ``_C``, COCOEvaluator falls back to pycocotools' COCOeval (exact, slower), and rotated
boxes / deformable convs are unavailable; DCDC uses neither.

A detectron2 that already imports (e.g. a CUDA build from source) is left untouched.
Usage: ``python tools/install_detectron2.py [--force | --repack WHEEL OUT_DIR]``.
It imports nothing of this repository: it runs before ``dcdc`` (which needs detectron2) can.
"""
import argparse
import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

DISTRIBUTION = "sal-detectron2==0.7.2"
# detectron2's own metadata omits these two; setuptools<81 keeps pkg_resources for model_zoo.
EXTRA_REQUIREMENTS = ["fvcore>=0.1.5,<0.1.6", "iopath>=0.1.7,<0.1.10", "setuptools<81"]
TOOLS_DIR = os.path.join(sys.prefix, "share", "detectron2", "tools")
CHECK = (
    "import detectron2, detectron2.model_zoo, detectron2.evaluation, detectron2.modeling;"
    "from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator;"
    "print(detectron2.__version__, detectron2.__file__)"
)


# (file in the wheel, upstream text, numpy-2-safe text): `np.asarray` copies only when needed,
# which is what `copy=False` meant before numpy 2.
NUMPY2_FIXES = [
    ("detectron2/evaluation/sem_seg_evaluation.py",
     "np.array(Image.open(f), copy=copy, dtype=dtype)",
     "(np.array if copy else np.asarray)(Image.open(f), dtype=dtype)"),
    ("detectron2/layers/mask_ops.py", "np.array(mask, copy=False)", "np.asarray(mask)"),
]


def detectron2_works():
    """Return the version line of a working detectron2 in this interpreter, else None."""
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def extract_tools(src_wheel, tools_dir):
    """Write the wheel's ``tools/*.py`` scripts (detectron2's command-line tools) to ``tools_dir``."""
    os.makedirs(tools_dir, exist_ok=True)
    with zipfile.ZipFile(src_wheel) as z:
        for name in z.namelist():
            if name.startswith("tools/") and name.endswith(".py") and name != "tools/__init__.py":
                with open(os.path.join(tools_dir, os.path.basename(name)), "wb") as f:
                    f.write(z.read(name))


def make_pure_python_wheel(src_wheel, out_dir):
    """Copy ``src_wheel`` without its binary and ``tools/`` package, retagged py3-none-any, with
    :data:`NUMPY2_FIXES` applied."""
    fixes = {name: (old, new) for name, old, new in NUMPY2_FIXES}
    with zipfile.ZipFile(src_wheel) as zin:
        names = zin.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/WHEEL"))
        dist_name, version = dist_info[: -len(".dist-info")].rsplit("-", 1)
        out_path = os.path.join(out_dir, f"{dist_name}-{version}-py3-none-any.whl")
        rows = []
        with zipfile.ZipFile(out_path, "w", zipfile.ZIP_DEFLATED) as zout:
            for name in names:
                if name.startswith("tools/") or (
                    name.startswith("detectron2/_C") and name.endswith(".so")
                ):
                    continue
                if name == f"{dist_info}/RECORD":
                    continue
                data = zin.read(name)
                if name == f"{dist_info}/WHEEL":
                    lines = []
                    for line in data.decode().splitlines():
                        if line.startswith("Tag:"):
                            line = "Tag: py3-none-any"
                        elif line.startswith("Root-Is-Purelib:"):
                            line = "Root-Is-Purelib: true"
                        lines.append(line)
                    data = ("\n".join(lines) + "\n").encode()
                if name in fixes:
                    old, new = fixes.pop(name)
                    if data.count(old.encode()) != 1:
                        raise RuntimeError(f"{name} of {src_wheel} does not hold {old!r} once: "
                                           "update NUMPY2_FIXES for this detectron2 version.")
                    data = data.replace(old.encode(), new.encode())
                if name == f"{dist_info}/top_level.txt":
                    data = b"detectron2\n"
                zout.writestr(name, data)
                rows.append(_record_line(name, data))
            record = io.StringIO()
            writer = csv.writer(record, lineterminator="\n")
            writer.writerows(rows + [[f"{dist_info}/RECORD", "", ""]])
            zout.writestr(f"{dist_info}/RECORD", record.getvalue())
    if fixes:
        raise RuntimeError(f"{src_wheel} has no {sorted(fixes)}: update NUMPY2_FIXES.")
    return out_path


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download(out_dir, tools_dir=None):
    """Download ``DISTRIBUTION``, write its pure-Python wheel to ``out_dir`` and return its path;
    with ``tools_dir``, also detectron2's command-line tools (:func:`extract_tools`)."""
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.10", "-q",
            "--dest", tmp, DISTRIBUTION)
        (src,) = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl")]
        if tools_dir:
            extract_tools(src, tools_dir)
        return make_pure_python_wheel(src, out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--force", action="store_true", help="reinstall even if a working detectron2 is present"
    )
    parser.add_argument(
        "--repack", nargs=2, metavar=("WHEEL", "OUT_DIR"),
        help="only turn a downloaded sal-detectron2 wheel into the pure-Python one in OUT_DIR "
             "(e.g. for an offline mirror) and print its path; installs nothing",
    )
    parser.add_argument("--download", metavar="OUT_DIR",
                        help="only download and repack it into OUT_DIR; installs nothing")
    parser.add_argument("--wheelhouse", metavar="DIR",
                        help="install offline the repacked wheel in DIR (tools/wheelhouse.py), "
                             "without dependencies")
    args = parser.parse_args(argv)
    if args.repack or args.download:
        os.makedirs((args.repack or [None, args.download])[1], exist_ok=True)
        print(make_pure_python_wheel(*args.repack) if args.repack else download(args.download))
        return

    found = detectron2_works()
    if found and not args.force:
        print(f"[install_detectron2] keeping the detectron2 already installed: {found}")
        return
    if args.wheelhouse:
        wheels = [os.path.join(args.wheelhouse, f) for f in os.listdir(args.wheelhouse)
                  if f.startswith("sal_detectron2-") and f.endswith("-py3-none-any.whl")]
        if len(wheels) != 1:
            sys.exit(f"[install_detectron2] {args.wheelhouse} holds no repacked detectron2 "
                     "wheel: make it with `make wheelhouse`.")
        print(f"[install_detectron2] installing {os.path.basename(wheels[0])} offline")
        pip("install", "--no-index", "--no-deps", "-q", wheels[0])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            wheel = download(tmp, TOOLS_DIR)
            print(f"[install_detectron2] installing {os.path.basename(wheel)} (pure Python, "
                  "no _C)")
            pip("install", wheel, *EXTRA_REQUIREMENTS)
    found = detectron2_works()
    if not found:
        sys.exit(
            "[install_detectron2] detectron2 was installed but does not import; run\n"
            f"  {sys.executable} -c '{CHECK}'\nto see the error."
        )
    tools = f"; its tools are in {TOOLS_DIR}" if os.path.isdir(TOOLS_DIR) else ""
    print(f"[install_detectron2] detectron2 ready: {found}{tools}")


if __name__ == "__main__":
    main()
