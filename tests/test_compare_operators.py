"""tools/compare_operators.py (`make compare`) on a tiny schedule: two operators x one seed, a few
iterations on the mini shapes splits (detection) and two iterations of one epoch on the shapes
crops (classification). The tables hold each run's own final evaluation, the counts are those of
the model each run trained, a rerun skips finished runs, a run killed with its runner is continued,
a folder trained with other settings is refused, the paired intervals are Student's, and a grid's
code is a worktree of one commit."""
import json
import os
import subprocess
import sys

import cv2
import pytest

from dcdc.config import get_dcdc_cfg
from dcdc.engine.metrics import last_evaluation, read_metrics
from dcdc.paper.comparison import Checkout, paired_t_interval, scaled_schedule
from dcdc.paper.counting import count_parameters
from dcdc.utils.errors import UserValueError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(REPO, "configs", "quickstart_panoptic_fpn_dcdc_shapes_instant.yaml")
QUICKSTART = os.path.join(REPO, "configs", "quickstart_panoptic_fpn_dcdc_shapes.yaml")
OPERATORS = ("conv", "dcdc")
MAX_ITER = 4


def _compare(out, env, *extra):
    cmd = [sys.executable, "tools/compare_operators.py", "--in-place", "--config-file", INSTANT,
           "--operators", *OPERATORS, "--seeds", "1", "--max-iter", str(MAX_ITER), "--epochs",
           "1", "--classifier-args=--iters-per-epoch 2", "--output-dir", out, *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "DETECTRON2_DATASETS": str(tmp_path_factory.mktemp("datasets")),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def grid(env, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("compare"))
    proc = _compare(out, env, "--num-vis", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def _out(grid, task):
    return os.path.join(grid[0], task)


def test_table_holds_each_runs_final_evaluation(grid):
    out, proc = _out(grid, "detection"), grid[1]
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert [r["operator"] for r in summary["rows"]] == list(OPERATORS)
    for row in summary["rows"]:
        run = os.path.join(out, f"{row['operator']}_seed1")
        final = last_evaluation(read_metrics(os.path.join(run, "metrics.json")))
        assert final["iteration"] in (MAX_ITER - 1, MAX_ITER)
        for key in ("bbox/AP", "segm/AP", "panoptic_seg/PQ"):
            assert row[key]["values"] == [final[key]], key
        # the trained model is the operator's, and the counted one is the trained one
        cfg = get_dcdc_cfg(os.path.join(run, "config.yaml"))
        assert cfg.MODEL.DCDC.OPERATOR == row["operator"] and cfg.MODEL.DCDC.NECK == "conv"
        assert cfg.SOLVER.MAX_ITER == MAX_ITER and cfg.SEED == 1
        from detectron2.modeling import build_model

        assert row["params_m"] == pytest.approx(count_parameters(build_model(cfg)) / 1e6)
        assert row["flops_g"] > 0 and row["wall_s"]["values"][0] > 0
    conv, dcdc = summary["rows"]
    assert conv["flops_with_agg_g"] == pytest.approx(conv["flops_g"])  # no LSA in a plain conv
    assert dcdc["flops_with_agg_g"] > dcdc["flops_g"]
    table = open(os.path.join(out, "results.md")).read()
    assert "| 3x3 conv (ResNet) |" in table and "| DCDC (LSA + GSI) |" in table
    assert "[detection 2/2] dcdc_seed1: done" in proc.stdout + proc.stderr
    assert cv2.imread(os.path.join(out, "compare.png")) is not None
    # pictures: ground truth | conv | dcdc, each panel 128 px drawn at scale 2, with title bands
    for name in ("000001.png", "000002.png"):
        picture = cv2.imread(os.path.join(out, "pictures", name))
        assert picture.shape[:2] == (2 * 128 + 22, 3 * 2 * 128 + 2 * 6), name


def test_classification_table(grid):
    out = _out(grid, "classification")
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["commit"] is None  # --in-place: a working tree, named as such
    assert [r["operator"] for r in summary["rows"]] == list(OPERATORS)
    for row in summary["rows"]:
        run = os.path.join(out, f"{row['operator']}_seed1")
        with open(os.path.join(run, "summary.csv")) as f:
            last = f.read().strip().splitlines()[-1].split(",")
        head = open(os.path.join(run, "summary.csv")).readline().strip().split(",")
        final = dict(zip(head, map(float, last)))
        assert final["epoch"] == 1
        assert row["eval_top1"]["values"] == [final["eval_top1"]]
        args = open(os.path.join(run, "log.txt")).read()
        assert f'"operator": "{row["operator"]}"' in args and '"scratch_init": true' in args
    conv, dcdc = summary["rows"]
    assert dcdc["params_m"] < conv["params_m"]  # LSA + GSI is leaner than a 3x3 conv
    table = open(os.path.join(out, "results.md")).read()
    assert "| top-1 (%) |" in table and "code: a working tree (no commit)" in table
    assert cv2.imread(os.path.join(out, "compare.png")) is not None


def test_paired_t_interval():
    # differences 1, 2, 3: mean 2, std 1, t(0.975, 2 dof) = 4.302653 -> 2 -+ 4.302653 / sqrt(3)
    mean, low, high = paired_t_interval([1.0, 2.0, 3.0])
    assert mean == 2 and high - 2 == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)
    assert 2 - low == pytest.approx(high - 2)
    assert paired_t_interval([0.5]) == (0.5, None, None)


def test_checkout_is_a_worktree_of_one_commit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    git("init", "-q")
    (repo / "a.txt").write_text("one")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    first = git("rev-parse", "HEAD")
    (repo / "a.txt").write_text("two")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    code = Checkout(str(repo), str(tmp_path / "out" / "code"))
    assert code.ensure(first, build_native=False, log=lambda m: None) == first
    assert (tmp_path / "out" / "code" / "a.txt").read_text() == "one"  # not HEAD's "two"
    assert code.ensure(build_native=False) == first  # resuming keeps the grid's commit
    with pytest.raises(UserValueError, match="keeps the code it started with"):
        code.ensure("HEAD", build_native=False)
    assert code.env()["PYTHONPATH"].split(os.pathsep)[0] == code.file("projects", "DCDC")


def test_rerun_skips_finished_and_refuses_other_settings(grid, env):
    out = _out(grid, "detection")
    attempts = {op: json.load(open(os.path.join(out, f"{op}_seed1", "compare_run.json")))
                ["attempts"] for op in OPERATORS}
    again = _compare(grid[0], env, "--num-vis", "0", "--tasks", "detection")
    assert again.returncode == 0, again.stderr[-3000:]
    for i, op in enumerate(OPERATORS, 1):
        assert (f"[detection {i}/2] {op}_seed1: finished before, skipped."
                in again.stdout + again.stderr)
        state = json.load(open(os.path.join(out, f"{op}_seed1", "compare_run.json")))
        assert state["attempts"] == attempts[op]  # not trained again
    other = _compare(grid[0], env, "--num-vis", "0", "--neck", "dcdc", "--dry-run", "--tasks",
                     "detection")
    assert other.returncode != 0 and "was trained with other settings" in other.stdout + other.stderr


# A run whose child "trains" by writing the final files, unless told to SIGKILL its parent (the
# runner) first, as a killed session does.
_KILLED_RUN = """
import json, os, sys
from dcdc.paper.comparison import Checkout, Run

class Scripted(Run):
    def command(self):
        return [sys.executable, "-c", (
            "import json, os, signal, sys\\n"
            "if os.environ.get('KILL_RUNNER'): os.kill(os.getppid(), signal.SIGKILL); sys.exit(1)\\n"
            f"os.chdir({self.output_dir!r})\\n"
            "json.dump({'AP': 1.0}, open('eval.json', 'w')); open('model_final.pth', 'w')")]

    def evaluation(self):
        path = os.path.join(self.output_dir, "eval.json")
        return json.load(open(path)) if os.path.isfile(path) else None

run = Scripted(sys.argv[1], Checkout(sys.argv[2], sys.argv[2]), "dcdc", 1, [], {"task": "t"})
run.train()
print(json.dumps([run.finished(), run.wall_time()[1]]))
"""


def test_run_killed_with_its_runner_is_continued(tmp_path, env):
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    cmd = [sys.executable, str(script), str(tmp_path / "grid"), REPO]
    killed = subprocess.run(cmd, env={**env, "KILL_RUNNER": "1"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert os.path.isfile(tmp_path / "grid" / "dcdc_seed1" / "compare_run.json")  # claimed
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1]) == [True, 2]  # two attempts


def test_scaled_schedule_keeps_fractions():
    cfg = get_dcdc_cfg(QUICKSTART)
    opts = dict(zip(*[iter(scaled_schedule(cfg, 400))] * 2))
    assert opts["SOLVER.MAX_ITER"] == "400" and opts["TEST.EVAL_PERIOD"] == "0"
    steps = eval(opts["SOLVER.STEPS"])
    assert len(steps) == len(cfg.SOLVER.STEPS)
    for new, old in zip(steps, cfg.SOLVER.STEPS):
        assert abs(new / 400 - old / cfg.SOLVER.MAX_ITER) <= 0.5 / 400
    assert abs(int(opts["SOLVER.WARMUP_ITERS"]) / 400
               - cfg.SOLVER.WARMUP_ITERS / cfg.SOLVER.MAX_ITER) <= 0.5 / 400
    with pytest.raises(ValueError, match="at least 4"):
        scaled_schedule(cfg, 2)
