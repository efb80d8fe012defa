"""The offline GPU path, checked without a GPU: the wheelhouse's list covers what dcdc and
detectron2 import, and benchmarks/run_gpu.sh runs its stages, within 8 minutes of budgets, and
writes every stage's log where there is no CUDA device."""
import json
import os
import re
import subprocess
import sys

from helpers import REPO

sys.path.insert(0, str(REPO / "tools"))
import wheelhouse  # noqa: E402

SCRIPT = REPO / "benchmarks" / "run_gpu.sh"

# Run in a child process: every dcdc module, and the modules detectron2 imports only when used
# (LazyConfig.to_py: black; overrides: hydra's parser; model_zoo: pkg_resources; evaluators).
_IMPORTED = """
import importlib, json, pkgutil, sys
import dcdc
for m in pkgutil.walk_packages(dcdc.__path__, "dcdc."):
    if not m.name.startswith(("dcdc._C", "dcdc.layers.triton_kernels")):
        importlib.import_module(m.name)
for name in ("black", "hydra.core.override_parser.overrides_parser", "detectron2.model_zoo",
             "detectron2.evaluation", "panopticapi.evaluation", "pycocotools.cocoeval"):
    importlib.import_module(name)
dists = importlib.metadata.packages_distributions()
mods = [m for m, mod in list(sys.modules.items())  # setuptools' vendored copies are setuptools'
        if "/_vendor/" not in str(getattr(mod, "__file__", None) or getattr(mod, "__path__", ""))]
print(json.dumps(sorted({d for m in mods for d in dists.get(m.split(".")[0], [])})))
"""


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names):
    """``names`` and everything they require (installed here, extras left out), normalised."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen, todo = set(), [_norm(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # e.g. pytest-xdist: on the GPU machine, not here
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_norm(req.name))
    return seen


def _wheelhouse_names():
    """The distributions in the wheelhouse: detectron2 (tools/install_detectron2.py) and the rest."""
    return {"sal-detectron2"} | {_norm(re.split(r"[=<>]", req)[0]) for req, _ in wheelhouse.PACKAGES}


def test_wheelhouse_covers_every_imported_distribution():
    proc = subprocess.run([sys.executable, "-c", _IMPORTED], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {_norm(d) for d in json.loads(proc.stdout.splitlines()[-1])}
    provided = _closure(wheelhouse.GPU_MACHINE_HAS) | _wheelhouse_names() | {"dcdc"}
    missing = imported - provided
    assert not missing, f"imported but neither on the GPU machine nor in the wheelhouse: {missing}"


def test_wheelhouse_covers_its_packages_requirements():
    """Installed with --no-deps, so the list itself must hold every requirement, except the ones
    NO_DEPS_REASON explains (detectron2's and panopticapi's numpy<2 pins, scikit-image)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    provided = _closure(wheelhouse.GPU_MACHINE_HAS) | _wheelhouse_names()
    ignored = {("sal-detectron2", "numpy"), ("panopticapi-lite", "numpy"),
               ("panopticapi-lite", "scikit-image")}
    assert {dist for dist, _ in ignored} == set(wheelhouse.NO_DEPS_REASON)
    for name in _wheelhouse_names():
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if (name, _norm(req.name)) not in ignored:
                assert _norm(req.name) in provided, f"{name} needs {req} (not in the wheelhouse)"


def test_run_gpu_budgets_fit_in_eight_minutes():
    text = SCRIPT.read_text()
    calls = re.findall(r"^stage (\S+) (?:\$\{INSTALL_BUDGET:-)?(\d+)\}? (cpu|cuda) (\w+)$", text,
                       re.M)
    names = [name for name, *_ in calls]
    assert names == ["install", "env", "cuda-tests", "bench-aggregation", "bench-models", "train"]
    assert sum(int(budget) for _, budget, *_ in calls) <= 8 * 60
    for name, budget, *_ in calls:  # the header's table states the same budget
        assert re.search(rf"^#   {name} +{budget} s ", text, re.M), name


def test_run_gpu_without_cuda_skips_and_writes_every_log(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "STAGES": "env cuda-tests bench-aggregation bench-models train"}
    proc = subprocess.run(["bash", str(SCRIPT), sys.executable, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text().splitlines()[1:]
    status = {line.split()[0]: line.split()[1] for line in summary}
    assert status == {"env": "ok", "cuda-tests": "skipped", "bench-aggregation": "skipped",
                      "bench-models": "skipped", "train": "skipped"}
    assert "no CUDA device" in (tmp_path / "env.log").read_text()
    for name in ("cuda-tests", "bench-aggregation", "bench-models", "train"):
        assert (tmp_path / f"{name}.log").read_text().startswith("no CUDA device")
    assert len(list(tmp_path.iterdir())) <= 8  # what the GPU machine can send back


def test_run_gpu_reports_a_failing_stage_and_goes_on(tmp_path):
    env = {**os.environ, "STAGES": "install env", "WHEELHOUSE": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(SCRIPT), sys.executable, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    status = dict(line.split()[:2] for line in
                  (tmp_path / "summary.txt").read_text().splitlines()[1:])
    assert status == {"install": "failed(1)", "env": "ok"}
    assert "is not a complete wheelhouse" in (tmp_path / "install.log").read_text()
