#!/usr/bin/env python
"""A wheelhouse for machines that reach no package index: download it online, install it offline.

A GPU cluster node usually has CUDA PyTorch (torch, torchvision, numpy, matplotlib, ...) and no
index. This tool downloads, on a machine that reaches PyPI, every other file this project needs
into one folder that travels with the repository, and installs from that folder on the node::

    python tools/wheelhouse.py download [--python-version 3.12] [--dest wheelhouse]  # online
    python tools/wheelhouse.py install [--wheelhouse wheelhouse] [--project .]      # offline

``download`` fetches the wheels of :data:`PACKAGES` for the chosen Python and platform (default
3.12, Linux x86_64; ``make wheelhouse PYTHON_VERSION=3.11`` for another), repacks
detectron2 as ``make install`` does (pure Python, see ``tools/install_detectron2.py``), builds
wheels of the packages PyPI has only as sources (pure Python, so they fit any Python 3), adds
this project's source distribution, and prints every file and the total.

``install`` runs with the target interpreter (``python`` of the node's environment). It keeps
that environment's torch, torchvision and numpy (nothing of them is in the wheelhouse), keeps a
detectron2 that already imports (a user's CUDA build), installs the rest without resolving
dependencies (``--no-deps``: detectron2 0.7.2 and panopticapi-lite pin ``numpy<2`` in their
metadata, yet the parts we use run on numpy 2, see :data:`NO_DEPS_REASON`), builds this
project (the native CPU kernels where a C++ compiler is present; the Triton kernels need
nothing more), and checks that everything imports.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

TOOLS = os.path.dirname(os.path.abspath(__file__))
# detectron2 is fetched, repacked and installed by its own tool (which `make install` runs too)
INSTALL_DETECTRON2 = [sys.executable, os.path.join(TOOLS, "install_detectron2.py")]

# What a CUDA PyTorch machine lacks besides detectron2, pinned to the versions `make install`
# tests. Each entry is (requirement, where it comes from): "wheel" = a binary wheel for the
# target Python/platform, "build" = PyPI has only a source distribution of this pure-Python
# package: we build the wheel.
PACKAGES = [
    ("fvcore==0.1.5.post20221221", "build"),
    ("iopath==0.1.9", "wheel"),
    ("yacs==0.1.8", "wheel"),
    ("termcolor==3.3.0", "wheel"),
    ("pycocotools==2.0.11", "wheel"),
    ("panopticapi-lite==0.2.0", "wheel"),
    ("omegaconf==2.3.1", "wheel"),
    ("hydra-core==1.3.8", "wheel"),
    ("antlr4-python3-runtime==4.9.3", "build"),
    ("setuptools==80.10.2", "wheel"),  # detectron2.model_zoo imports pkg_resources (gone in 81)
    # detectron2's LazyConfig.to_py formats configs with black
    ("black==26.10.1", "wheel"),
    ("click==8.5.1", "wheel"),
    ("mypy_extensions==1.2.0", "wheel"),
    ("pathspec==1.1.1", "wheel"),
    ("platformdirs==4.14.9", "wheel"),
    ("pytokens==0.4.1", "wheel"),
]

# The distributions a CUDA PyTorch GPU machine provides (the reference offline machine of
# benchmarks/run_gpu.sh: torch 2.11 / CUDA 13, Python 3.12): nothing of these is downloaded.
GPU_MACHINE_HAS = [
    "torch", "torchvision", "triton", "numpy", "onnx", "onnxruntime", "onnxscript",
    "opencv-python-headless", "pytest", "pytest-xdist", "hypothesis", "timm", "matplotlib",
    "scipy", "pyyaml", "tabulate", "tqdm", "cloudpickle", "portalocker", "tensorboard",
    "pybind11", "ninja", "cmake", "setuptools", "wheel", "pillow", "packaging",
]

NO_DEPS_REASON = {
    "sal-detectron2": "metadata pins numpy<2; its code runs on numpy 2 (the GPU script's tests)",
    "panopticapi-lite": "metadata pins numpy<2 and wants scikit-image, which the evaluation "
                        "module detectron2 imports never uses",
}
MAX_MIB = 40


def _pip(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pip", *args], check=True, **kwargs)


def download(dest, python_version, arch):
    os.makedirs(dest, exist_ok=True)
    for old in glob.glob(os.path.join(dest, "*")):
        os.remove(old)  # a wheelhouse for one Python version at a time
    print("[wheelhouse] detectron2, repacked as `make install` installs it", flush=True)
    subprocess.run([*INSTALL_DETECTRON2, "--download", dest], check=True,
                   stdout=subprocess.DEVNULL)
    target = ["--python-version", python_version, "--only-binary=:all:"]
    for glibc in (17, 28, 34):  # manylinux wheels for glibc 2.17 and newer
        target += ["--platform", f"manylinux_2_{glibc}_{arch}"]
    for requirement, kind in PACKAGES:
        print(f"[wheelhouse] {requirement} ({kind})", flush=True)
        if kind == "build":
            _pip("wheel", "--no-deps", "-q", "-w", dest, requirement)
        else:
            _pip("download", "--no-deps", "-q", "--dest", dest, *target, requirement)
    # this project, as a source distribution: it builds against the target machine's torch
    env = {**os.environ, "DCDC_BUILD_NATIVE": "0"}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", os.path.abspath(dest),
                        "egg_info", "--egg-base", tmp], cwd=repo, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    total = 0
    print(f"\n[wheelhouse] {dest} for Python {python_version}, Linux {arch}:")
    for path in sorted(glob.glob(os.path.join(dest, "*"))):
        size = os.path.getsize(path)
        total += size
        print(f"  {size / 2**20:7.2f} MiB  {os.path.basename(path)}")
    print(f"  {total / 2**20:7.2f} MiB  in all")
    if total > MAX_MIB * 2**20:
        sys.exit(f"[wheelhouse] {total / 2**20:.1f} MiB is over the {MAX_MIB} MiB budget.")


def _files(wheelhouse):
    """The wheelhouse's wheels of :data:`PACKAGES` and this project's sdist."""
    files = glob.glob(os.path.join(wheelhouse, "*.whl"))
    wheels = sorted(f for f in files if not os.path.basename(f).startswith("sal_detectron2-"))
    sdists = sorted(glob.glob(os.path.join(wheelhouse, "dcdc-*.tar.gz")))
    if len(wheels) != len(PACKAGES) or len(files) != len(PACKAGES) + 1 or not sdists:
        sys.exit(f"[wheelhouse] {wheelhouse} is not a complete wheelhouse ({len(files)} wheels, "
                 f"{len(sdists)} dcdc sdist); make it with `make wheelhouse` on a machine that "
                 "reaches PyPI, with PYTHON_VERSION set to this machine's Python version.")
    return wheels, sdists[-1]


def install(wheelhouse, project):
    try:
        import torch
    except ImportError:
        sys.exit("[wheelhouse] this Python has no torch: install PyTorch (a CUDA build on a GPU "
                 "machine) first; the wheelhouse holds everything else.")
    wheels, sdist = _files(wheelhouse)
    offline = ["install", "--no-index", "--no-deps", "--find-links", wheelhouse,
               "--disable-pip-version-check"]
    print(f"[wheelhouse] installing {len(wheels)} wheels offline beside torch {torch.__version__}",
          flush=True)
    _pip(*offline, *wheels)
    # keeps a detectron2 that already imports (a user's CUDA build), else the repacked one
    subprocess.run([*INSTALL_DETECTRON2, "--wheelhouse", wheelhouse], check=True)
    # the native CPU kernels build against this torch where a C++ compiler is present
    _pip(*offline, "--no-build-isolation", project or sdist)
    check = ("import dcdc, detectron2, numpy, torch; from dcdc.layers import dispatch; "
             "print('dcdc', dcdc.__file__, '| detectron2', detectron2.__version__, '| torch', "
             "torch.__version__, '| numpy', numpy.__version__, '| native CPU kernels:', "
             "dispatch.native_available(), '| triton:', dispatch.triton_available())")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"[wheelhouse] installed, but the import check failed:\n{proc.stderr[-3000:]}")
    print(f"[wheelhouse] ready: {proc.stdout.strip()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    down = sub.add_parser("download", help="fetch the wheelhouse (needs PyPI)")
    down.add_argument("--dest", default="wheelhouse")
    down.add_argument("--python-version", default="3.12", help="target Python, e.g. 3.11")
    down.add_argument("--arch", default="x86_64", help="target Linux machine, e.g. aarch64")
    inst = sub.add_parser("install", help="install offline into this Python (keeps its torch)")
    inst.add_argument("--wheelhouse", default="wheelhouse")
    inst.add_argument("--project", help="install this project from a source tree instead of "
                                        "the wheelhouse's sdist (e.g. .)")
    args = parser.parse_args(argv)
    if args.command == "download":
        download(args.dest, args.python_version, args.arch)
    else:
        install(args.wheelhouse, args.project)


if __name__ == "__main__":
    main()
