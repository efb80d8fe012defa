"""Operators side by side on the built-in data: a miniature of the paper's Tables III and V.

What ``make compare`` runs (``tools/compare_operators.py``). The protocol, fixed before the runs
(docs/reproducing.md has the long form and the results):

* Operators (``MODEL.DCDC.OPERATOR`` / the classifier's ``operator``): a plain 3x3 conv, RedNet's
  involution, the LSA branch alone and DCDC (LSA + GSI), in :data:`DISPLAY_ORDER`.
* Two tasks (:data:`TASKS`), one recipe per task for every operator, no per-operator tuning:

  - ``detection``: the quickstart Panoptic FPN (narrow DCDC-ResNet-26 layout, 128 px shapes) at
    its full schedule, detectron2's FPN neck so that only the backbone operator differs; box AP,
    mask AP, PQ of the final evaluation on ``shapes_val``.
  - ``classification`` (Table III's own task): the same narrow DCDC-ResNet-26 layout as a
    classifier on the shapes object crops (``shapes_cls``, 4 classes, 64 px), the "shapes"
    recipe of ``tools/train_classifier.py`` for :data:`CLASSIFICATION_EPOCHS` epochs; top-1
    accuracy and loss on the val crops after the last epoch.

  Both start from scratch with the anchors' initialisation (Kaiming fan_out for every conv, the
  operators' kernel generators included, norms 1 / 0, each residual block's last norm 0), the
  same for every operator.
* Seeds 1..5 (at least five); one seed fixes the data order and augmentations for every operator
  (detection: the loader's own generator; classification: re-seeded after the model is drawn),
  so runs of one seed are paired. Every started run is in the table.
* Reported: mean +- sample std per operator and metric, and the paired differences DCDC - LSA,
  DCDC - involution, LSA - involution over the seeds both finished, with 95% paired-t intervals
  (:func:`paired_differences`).
* Code: the grid runs from a git worktree of one commit (:class:`Checkout`, ``<output>/code``),
  so other work on the repository does not change the code under a grid that runs for hours;
  the tables name that commit. A grid folder stays tied to its commit.

Runs are child processes in ``<output>/<task>/<operator>_seed<N>/``: a finished run is skipped,
an interrupted one continues from its last checkpoint, a folder trained with other settings is
refused rather than mixed into a table.
"""
import argparse
import csv
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..config import get_dcdc_cfg
from ..data import prepare_data
from ..engine.metrics import last_evaluation, read_metrics
from ..layers.variants import OPERATORS, VARIANTS
from ..utils.errors import UserValueError
from .counting import count_parameters, flop_count

__all__ = ["DISPLAY_ORDER", "OPERATOR_NAMES", "TASKS", "PAIRS", "Checkout", "DetectionRun",
           "ClassificationRun", "scaled_schedule", "measure_detector", "measure_classifier",
           "summarize", "paired_differences", "format_markdown", "plot_comparison", "get_parser",
           "main"]

logger = logging.getLogger("dcdc.compare_operators")

# Table order and labels: the operators of dcdc.layers.variants, in its (display) order.
DISPLAY_ORDER = OPERATORS
OPERATOR_NAMES = {v.name: v.label for v in VARIANTS if v.name in OPERATORS}
# The paired differences reported: (minuend, subtrahend).
PAIRS = (("dcdc", "lsa"), ("dcdc", "involution"), ("lsa", "involution"))
DEFAULT_SEEDS = (1, 2, 3, 4, 5)
# The file a run folder is claimed by: the settings it was trained with and its wall times.
RUN_FILE = "compare_run.json"

# The classification miniature: Table III's layout (DCDC-ResNet-26) at the detection
# miniature's width (stem 32, res2 128: half of Table I's), from scratch, one recipe.
CLASSIFIER_MODEL = "dcdc_resnet26"
CLASSIFIER_WIDTH = {"stem_out_channels": 32, "res2_out_channels": 128}
CLASSIFICATION_EPOCHS = 12


@dataclass(frozen=True)
class Task:
    title: str
    metrics: tuple  # ((key in the run's evaluation, column title), ...)


TASKS = {
    "detection": Task("Panoptic FPN on shapes (128 px)",
                      (("bbox/AP", "box AP"), ("segm/AP", "mask AP"), ("panoptic_seg/PQ", "PQ"))),
    "classification": Task("DCDC-ResNet-26 layout (narrow) classifying shapes crops (64 px)",
                           (("eval_top1", "top-1 (%)"), ("eval_loss", "val loss"))),
}


# ----------------------------------------------------------------------------- code checkout
def _git(*args, cwd):
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserValueError(f"git {' '.join(args)} failed in {cwd}: "
                             f"{(result.stderr or result.stdout).strip()}")
    return result.stdout.strip()


class Checkout:
    """The code a grid runs: a detached git worktree of one commit at ``path``.

    The worktree holds the repository's tracked files at that commit; the native CPU kernels are
    built in it (``setup.py build_ext --inplace``) unless ``build_native`` is False (the
    operators then run their PyTorch composite: same values, slower). Children import the
    checkout's ``dcdc`` first (:meth:`env`).
    """

    def __init__(self, repo, path):
        self.repo, self.path = os.path.abspath(repo), os.path.abspath(path)

    @property
    def commit(self):
        return _git("rev-parse", "HEAD", cwd=self.path) if os.path.isdir(self.path) else None

    def ensure(self, commit=None, build_native=True, log=logger.info):
        """Create the worktree at ``commit`` (default: the repository's HEAD), or check that the
        existing one is at it. Returns the commit."""
        if os.path.isdir(self.path):
            have = self.commit
            if commit is not None and _git("rev-parse", commit, cwd=self.repo) != have:
                raise UserValueError(
                    f"{self.path} holds commit {have[:12]}; a grid folder keeps the code it "
                    f"started with. Resume it without --commit, or give commit {commit} "
                    "another --output-dir.")
            return have
        commit = _git("rev-parse", commit or "HEAD", cwd=self.repo)
        if _git("status", "--porcelain", "--untracked-files=no", cwd=self.repo):
            log("The working tree has uncommitted changes; the grid runs commit "
                f"{commit[:12]} without them.")
        log(f"Checking out commit {commit[:12]} into {self.path} (git worktree) ...")
        _git("worktree", "add", "--detach", self.path, commit, cwd=self.repo)
        if build_native:
            log("Building the native CPU kernels in the checkout ...")
            with open(os.path.join(self.path, "build_ext.log"), "w") as f:
                result = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                                        cwd=self.path, stdout=f, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                raise RuntimeError(f"building the native kernels in {self.path} failed; see "
                                   f"{self.path}/build_ext.log.")
        return commit

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def env(self, threads=None):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [self.file("projects", "DCDC")] + [p for p in [env.get("PYTHONPATH")] if p])
        if threads is not None:
            env.setdefault("OMP_NUM_THREADS", str(threads))
        return env


# ----------------------------------------------------------------------------- runs
def scaled_schedule(cfg, max_iter):
    """``KEY VALUE`` overrides that shrink ``cfg``'s schedule to ``max_iter`` iterations: LR steps
    and warm-up at the same fractions of training, one evaluation after the last iteration, a
    checkpoint every quarter (what an interrupted run resumes from)."""
    if max_iter < 4:
        raise UserValueError(f"--max-iter must be at least 4, got {max_iter}.")
    base = cfg.SOLVER.MAX_ITER
    steps = tuple(sorted({max(1, round(s * max_iter / base)) for s in cfg.SOLVER.STEPS
                          if s < base} - {max_iter}))
    warmup = min(max_iter // 2, round(cfg.SOLVER.WARMUP_ITERS * max_iter / base))
    return ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", str(steps),
            "SOLVER.WARMUP_ITERS", str(warmup), "SOLVER.CHECKPOINT_PERIOD",
            str(max(1, math.ceil(max_iter / 4))), "TEST.EVAL_PERIOD", "0"]


class Run:
    """One (operator, seed) training of a grid, in a child process, in ``<root>/<name>/``.

    Subclasses give :meth:`command`, :meth:`evaluation` (None until the run has ended) and
    ``FINAL`` (the weights file a finished run has written)."""

    FINAL = "model_final.pth"

    def __init__(self, root, code, operator, seed, opts, settings):
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}.")
        self.operator, self.seed, self.code = operator, seed, code
        self.output_dir = os.path.join(os.path.abspath(root), f"{operator}_seed{seed}")
        self.opts = list(opts)
        self.settings = {**settings, "operator": operator, "seed": seed, "opts": self.opts}

    @property
    def name(self):
        return f"{self.operator}_seed{self.seed}"

    def _state(self):
        path = os.path.join(self.output_dir, RUN_FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def check_folder(self):
        """Raise if the folder holds a run trained with other settings, or files of something
        else; a later table would otherwise mix them in."""
        state = self._state()
        if state is None:
            if os.path.isdir(self.output_dir) and os.listdir(self.output_dir):
                raise UserValueError(
                    f"{self.output_dir} exists, is not empty and has no {RUN_FILE}: it is not a "
                    "run of this comparison. Move it away or choose another --output-dir.")
            return
        if state["settings"] != self.settings:
            raise UserValueError(
                f"{self.output_dir} was trained with other settings ({state['settings']}) than "
                f"this command asks for ({self.settings}). Delete the folder to retrain it, "
                "or give the new settings another --output-dir.")

    def finished(self):
        self.check_folder()
        return (self.evaluation() is not None
                and os.path.isfile(os.path.join(self.output_dir, self.FINAL)))

    def wall_time(self):
        """Seconds of training (all attempts together; a killed attempt's are unknown), and the
        number of attempts."""
        state = self._state() or {"attempts": []}
        return (sum(a.get("wall_s") or 0 for a in state["attempts"]), len(state["attempts"]))

    def _write_state(self, state):
        tmp = os.path.join(self.output_dir, RUN_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, os.path.join(self.output_dir, RUN_FILE))

    def train(self, threads=1, log=print):
        """Train (or continue) in a child process; raises if it fails. The folder is claimed
        (its state file written) before the child starts, so that a run killed at any moment
        is continued by the next call, not refused as a stranger's folder."""
        self.check_folder()
        os.makedirs(self.output_dir, exist_ok=True)
        state = self._state() or {"settings": self.settings, "attempts": []}
        attempt = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": None}
        state["attempts"].append(attempt)
        self._write_state(state)
        cmd = self.command()
        log(f"[{self.name}] " + " ".join(cmd))
        start = time.time()
        with open(os.path.join(self.output_dir, "train.log"), "a") as f:
            result = subprocess.run(cmd, env=self.code.env(threads), cwd=self.code.path,
                                    stdout=f, stderr=subprocess.STDOUT)
        attempt.update(wall_s=round(time.time() - start, 1), returncode=result.returncode,
                       ended=time.strftime("%Y-%m-%d %H:%M:%S"))
        self._write_state(state)
        if result.returncode != 0:
            raise RuntimeError(f"[{self.name}] training failed with exit status "
                               f"{result.returncode}; see {self.output_dir}/train.log.")
        if self.evaluation() is None:
            raise RuntimeError(f"[{self.name}] training ended without a final evaluation; see "
                               f"{self.output_dir}/train.log.")

    def remove(self):
        """Delete the run folder (only one this comparison claimed)."""
        if self._state() is not None:
            shutil.rmtree(self.output_dir)


class DetectionRun(Run):
    """``train_net.py --resume`` with ``MODEL.DCDC.OPERATOR`` and ``SEED`` on top of the base
    config's overrides; the final evaluation from detectron2's ``metrics.json``."""

    def __init__(self, root, code, operator, seed, config_file, base_opts, max_iter):
        self.config_file, self.max_iter = config_file, max_iter
        super().__init__(root, code, operator, seed,
                         [*base_opts, "MODEL.DCDC.OPERATOR", operator, "SEED", str(seed)],
                         {"task": "detection", "config_file": config_file})

    def command(self):
        return [sys.executable, self.code.file("train_net.py"), "--resume", "--config-file",
                self.code.file(self.config_file), "OUTPUT_DIR", self.output_dir, *self.opts]

    def evaluation(self):
        path = os.path.join(self.output_dir, "metrics.json")
        if not os.path.isfile(path):
            return None
        final = last_evaluation(read_metrics(path))
        # an evaluation after the last step is stored at iteration max_iter, one triggered by
        # TEST.EVAL_PERIOD at the last step at max_iter - 1
        if final is None or final.get("iteration") not in (self.max_iter - 1, self.max_iter):
            return None
        return final


class ClassificationRun(Run):
    """``tools/train_classifier.py --resume auto`` of the narrow DCDC-ResNet-26 layout with the
    operator; the last epoch's row of timm's ``summary.csv``."""

    def __init__(self, root, code, operator, seed, epochs, extra_args=()):
        self.epochs = epochs
        kwargs = {"operator": operator, **CLASSIFIER_WIDTH, "scratch_init": True}
        super().__init__(root, code, operator, seed,
                         ["--model", CLASSIFIER_MODEL, "--model-kwargs",
                          *[f"{k}={v}" for k, v in kwargs.items()], "--epochs", str(epochs),
                          "--seed", str(seed), *extra_args],
                         {"task": "classification"})

    def command(self):
        return [sys.executable, self.code.file("tools", "train_classifier.py"), *self.opts,
                "--output", self.output_dir, "--resume", "auto", "--log-interval", "1000"]

    def evaluation(self):
        path = os.path.join(self.output_dir, "summary.csv")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            rows = list(csv.DictReader(f))
        if not rows or int(float(rows[-1]["epoch"])) != self.epochs:
            return None
        return {k: float(v) for k, v in rows[-1].items()}


# ----------------------------------------------------------------------------- counting
def _backbone_flops(module, inputs):
    """(FLOPs without, with the LSA aggregation), G MACs, fvcore's counting."""
    total, aggregation = flop_count(module, inputs)
    return (total - aggregation) / 1e9, total / 1e9


@torch.no_grad()
def measure_detector(config_file, opts, operator):
    """#Params (whole model, M), backbone + neck #Params (M) and backbone + neck FLOPs (G MACs,
    without and with the LSA aggregation) of one variant at the config's test input size.

    FLOPs cover the part the operators change; the heads are the same in every variant."""
    from detectron2.modeling import build_model

    cfg = get_dcdc_cfg(config_file, [*opts, "MODEL.DCDC.OPERATOR", operator, "MODEL.DEVICE",
                                     "cpu"])
    model = build_model(cfg).eval()
    size = cfg.INPUT.MIN_SIZE_TEST
    flops, with_agg = _backbone_flops(model.backbone, (torch.zeros(1, 3, size, size),))
    return {"params_m": count_parameters(model) / 1e6,
            "backbone_params_m": count_parameters(model.backbone) / 1e6,
            "flops_g": flops, "flops_with_agg_g": with_agg, "input_size": size}


@torch.no_grad()
def measure_classifier(operator, num_classes=4, size=64):
    """The classification miniature's model: #Params (M), without the head too, and FLOPs."""
    from ..modeling.timm_models import DCDCResNet

    model = DCDCResNet(26, operator, num_classes=num_classes, **CLASSIFIER_WIDTH).eval()
    flops, with_agg = _backbone_flops(model, (torch.zeros(1, 3, size, size),))
    return {"params_m": count_parameters(model) / 1e6,
            "backbone_params_m": count_parameters(model) / 1e6 - count_parameters(
                model.linear) / 1e6,
            "flops_g": flops, "flops_with_agg_g": with_agg, "input_size": size}


# ----------------------------------------------------------------------------- statistics
def summarize(runs, measures, metrics):
    """One dict per operator (in :data:`DISPLAY_ORDER`): measures, and for each metric the
    per-seed values (``{seed: value}``), mean and sample standard deviation (0 with one seed);
    finished runs only, the unfinished listed as ``missing``."""
    rows = []
    for op in DISPLAY_ORDER:
        mine = [r for r in runs if r.operator == op]
        if not mine:
            continue
        done = [(r, r.evaluation()) for r in mine]
        done = [(r, e) for r, e in done if e is not None]
        row = {"operator": op, "name": OPERATOR_NAMES[op], "seeds": [r.seed for r, _ in done],
               "missing": [r.seed for r in mine if r.evaluation() is None],
               **measures.get(op, {})}
        for key, _ in metrics:
            per_seed = {r.seed: float(e[key]) for r, e in done if key in e}
            values = list(per_seed.values())
            row[key] = {"per_seed": per_seed, "values": values,
                        "mean": float(np.mean(values)) if values else None,
                        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
        walls = [r.wall_time()[0] for r, _ in done]
        row["wall_s"] = {"values": walls, "mean": float(np.mean(walls)) if walls else None}
        rows.append(row)
    return rows


def paired_t_interval(differences, confidence=0.95):
    """Mean of the paired differences and its two-sided Student-t interval; (mean, low, high),
    the bounds None with fewer than two pairs."""
    d = np.asarray(differences, dtype=np.float64)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, None, None
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, mean - half, mean + half


def paired_differences(rows, metrics, pairs=PAIRS):
    """For each (a, b) of ``pairs`` with both operators in ``rows`` and each metric: the seeds
    both finished, the differences a - b per seed, their mean and 95% paired-t interval."""
    by_op = {r["operator"]: r for r in rows}
    out = []
    for a, b in pairs:
        if a not in by_op or b not in by_op:
            continue
        entry = {"pair": (a, b), "name": f"{OPERATOR_NAMES[a]} - {OPERATOR_NAMES[b]}"}
        for key, _ in metrics:
            va, vb = by_op[a][key]["per_seed"], by_op[b][key]["per_seed"]
            seeds = sorted(set(va) & set(vb))
            diffs = [va[s] - vb[s] for s in seeds]
            mean, low, high = paired_t_interval(diffs) if diffs else (None, None, None)
            entry[key] = {"seeds": seeds, "differences": diffs, "mean": mean, "low": low,
                          "high": high}
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- output
def format_markdown(rows, differences, metrics):
    """The summary (mean ± sample std over seeds) and the paired differences as markdown."""
    head = ["Operator", "#Params (M)", "w/o head (M)", "GFLOPs w/o / with agg.",
            *[t for _, t in metrics], "seeds", "wall time / run (min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"]]
        if "params_m" in r:
            cells += [f"{r['params_m']:.2f}", f"{r['backbone_params_m']:.2f}",
                      f"{r['flops_g']:.3f} / {r['flops_with_agg_g']:.3f}"]
        else:
            cells += ["not counted"] * 3
        for key, _ in metrics:
            m = r[key]
            cells.append("not run" if m["mean"] is None else
                         f"{m['mean']:.2f} ± {m['std']:.2f}" if len(m["values"]) > 1 else
                         f"{m['mean']:.2f}")
        seeds = ", ".join(map(str, r["seeds"])) or "-"
        if r["missing"]:
            seeds += f" (not finished: {', '.join(map(str, r['missing']))})"
        cells.append(seeds)
        cells.append("-" if r["wall_s"]["mean"] is None else f"{r['wall_s']['mean'] / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if differences:
        lines += ["", "Paired differences (same seed), mean [95% paired-t interval], n seeds:", "",
                  "| Difference | " + " | ".join(t for _, t in metrics) + " |",
                  "|" + "---|" * (len(metrics) + 1)]
        for d in differences:
            cells = [d["name"]]
            for key, _ in metrics:
                m = d[key]
                if m["mean"] is None:
                    cells.append("no common seed")
                elif m["low"] is None:
                    cells.append(f"{m['mean']:+.2f} (n=1)")
                else:
                    cells.append(f"{m['mean']:+.2f} [{m['low']:+.2f}, {m['high']:+.2f}] "
                                 f"(n={len(m['seeds'])})")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_comparison(rows, differences, metrics, path, title):
    """One figure: each metric per operator (bar = mean, dots = seeds, a grey line joins one
    seed's runs), the paired differences with their intervals, and #Params / FLOPs / wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"].replace(" (", "\n(") for r in rows]
    x = np.arange(len(rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = [("metric", k, t) for k, t in metrics] + [("diff", k, t + ": paired diff.")
                                                       for k, t in metrics]
    panels += [("measure", "params_m", "#Params (M)"), ("measure", "flops_g", "GFLOPs"),
               ("measure", "wall_s", "wall time / run (min)")]
    cols = max(len(metrics) * 2, 3)
    fig, axes = plt.subplots(2, cols, figsize=(3.1 * cols, 7.2), squeeze=False)
    grid = [ax for row in axes for ax in row]
    for ax in grid[len(panels):]:
        ax.axis("off")
    for ax, (kind, key, label) in zip(grid, panels):
        if kind == "diff":
            for i, d in enumerate(differences):
                m = d[key]
                if m["mean"] is None:
                    continue
                ax.plot([i] * len(m["differences"]), m["differences"], "o", color="black", ms=3)
                if m["low"] is not None:
                    ax.errorbar(i, m["mean"], yerr=[[m["mean"] - m["low"]], [m["high"] - m["mean"]]],
                                fmt="s", color=colors[i % len(colors)], capsize=4)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(np.arange(len(differences)))
            ax.set_xticklabels([f"{a} -\n{b}" for a, b in (d["pair"] for d in differences)],
                               fontsize=7)
        else:
            seeds = sorted({s for r in rows for s in r[key]["per_seed"]}) if kind == "metric" else []
            for s in seeds:  # one seed's runs joined: the pairing the differences use
                pts = [(i, r[key]["per_seed"][s]) for i, r in enumerate(rows)
                       if s in r[key]["per_seed"]]
                ax.plot(*zip(*pts), color="grey", lw=0.6, alpha=0.6)
            for i, r in enumerate(rows):
                v = r.get(key)
                if isinstance(v, dict):
                    values = v["values"] if key != "wall_s" else [w / 60 for w in v["values"]]
                    if values:
                        ax.bar(i, np.mean(values), color=colors[i % len(colors)], alpha=0.6)
                        ax.plot([i] * len(values), values, "o", color="black", ms=3)
                elif v is not None:
                    ax.bar(i, v, color=colors[i % len(colors)], alpha=0.6)
            ax.set_xticks(x)
            ax.set_xticklabels(names, fontsize=6.5)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line
def get_parser(default_config):
    parser = argparse.ArgumentParser(
        prog="compare_operators.py",
        description="Each spatial operator x seeds, trained with one recipe per task; tables "
        "with paired differences, figures (what `make compare` runs).")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS),
                        help="grids to run, one after the other")
    parser.add_argument("--output-dir", default="output/compare",
                        help="grids go to <output-dir>/<task>/, the code to <output-dir>/code/")
    parser.add_argument("--operators", nargs="+", default=list(DISPLAY_ORDER), choices=OPERATORS,
                        help="MODEL.DCDC.OPERATOR values to compare")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--commit", default=None,
                        help="the commit whose code the grids run (default: HEAD for a new "
                        "--output-dir, the one it holds otherwise)")
    parser.add_argument("--in-place", action="store_true",
                        help="run this working tree's code instead of a checkout of one commit "
                        "(quick tries; the table then names no commit)")
    parser.add_argument("--config-file", default=default_config, help="detection: the config")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="detection: iterations of every run (default: the config's full "
                        "schedule; LR steps and warm-up scaled to it); one evaluation at the end")
    parser.add_argument("--neck", default="conv", choices=("conv", "dcdc", "involution"),
                        help="detection: MODEL.DCDC.NECK of every variant ('conv': detectron2's "
                        "FPN, so that only the backbone operator differs, as in Table V's "
                        "convolution-neck rows)")
    parser.add_argument("--epochs", type=int, default=CLASSIFICATION_EPOCHS,
                        help="classification: epochs of every run")
    parser.add_argument("--classifier-args", default="",
                        help="classification: more train_classifier.py arguments for every run, "
                        "one string, e.g. --classifier-args='--iters-per-epoch 2' (smoke tests)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of each training (unless set in the environment)")
    parser.add_argument("--num-vis", type=int, default=4,
                        help="detection: val images drawn by demo.py with every operator's first "
                        "seed (0: no pictures)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the runs and their commands, train nothing")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="detection: config overrides, KEY VALUE ...")
    return parser


def _draw_pictures(runs, cfg, code, output_dir, num_images):
    """``demo.py --model <operator>=<config.yaml>:<model_final.pth> ...`` on the first
    ``num_images`` test images: one picture per image, ground truth | each operator."""
    from detectron2.data import DatasetCatalog

    files = [d["file_name"] for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[:num_images]]
    models = []
    for r in runs:
        models += ["--model", f"{r.operator}={os.path.join(r.output_dir, 'config.yaml')}:"
                   f"{os.path.join(r.output_dir, 'model_final.pth')}"]
    out = os.path.join(output_dir, "pictures")
    cmd = [sys.executable, code.file("demo.py"), *models, "--input", *files, "--output", out,
           "--scale", "2"]
    logger.info("Pictures: " + " ".join(cmd))
    if subprocess.run(cmd, cwd=code.path, env=code.env()).returncode != 0:
        raise RuntimeError("demo.py failed; see its output above.")
    return out


def _plan(args, code, task):
    """(runs in seed-major order, measures function, note fragment, base config or None)."""
    operators = [op for op in DISPLAY_ORDER if op in args.operators]
    root = os.path.join(args.output_dir, task)
    # seed-major: an interrupted grid has every operator's first seed before any second one
    if task == "detection":
        config = os.path.relpath(os.path.abspath(args.config_file), code.path)
        if config.startswith(".."):
            raise UserValueError(f"--config-file {args.config_file} is not inside {code.path}.")
        cfg = get_dcdc_cfg(args.config_file, args.opts)
        max_iter = args.max_iter or cfg.SOLVER.MAX_ITER
        base = [*scaled_schedule(cfg, max_iter), "MODEL.DCDC.NECK", args.neck, *args.opts]
        runs = [DetectionRun(root, code, op, s, config, base, max_iter)
                for s in args.seeds for op in operators]
        note = (f"{max_iter} iterations per run (batch {cfg.SOLVER.IMS_PER_BATCH}, "
                f"{cfg.INPUT.MIN_SIZE_TEST} px), neck '{args.neck}'")
        return runs, (lambda op: measure_detector(args.config_file, base, op)), note, cfg
    runs = [ClassificationRun(root, code, op, s, args.epochs, shlex.split(args.classifier_args))
            for s in args.seeds for op in operators]
    return runs, measure_classifier, f"{args.epochs} epochs per run", None


def run_grid(args, code, commit, task):
    """Train what is missing of one task's grid, then write its table and figure."""
    spec = TASKS[task]
    runs, measure, note, cfg = _plan(args, code, task)
    for r in runs:
        r.check_folder()
    out = os.path.join(args.output_dir, task)
    logger.info(f"[{task}] {len(runs)} runs ({', '.join(args.operators)} x seeds {args.seeds}), "
                f"{note}, in {out}; code {commit or 'of the working tree'}; {os.cpu_count()} "
                f"CPUs, load average {os.getloadavg()[0]:.1f}.")
    if args.dry_run:
        for r in runs:
            state = "finished, skipped" if r.finished() else "to train"
            print(f"{task} {r.name}: {state}: {' '.join(r.command())}")
        return
    if cfg is not None:
        prepare_data(cfg)
    else:
        from ..data.classification import ensure_shapes_imagefolder

        ensure_shapes_imagefolder()  # once here, not by two runs at a time
    trained_now = []
    for i, r in enumerate(runs, 1):
        if r.finished():
            logger.info(f"[{task} {i}/{len(runs)}] {r.name}: finished before, skipped.")
            continue
        logger.info(f"[{task} {i}/{len(runs)}] {r.name}: training (log: {r.output_dir}/"
                    "train.log) ...")
        r.train(args.threads, log=logger.info)
        trained_now.append(r.wall_time()[0])
        left = sum(1 for q in runs[i:] if not q.finished())
        final = r.evaluation()
        logger.info(f"[{task} {i}/{len(runs)}] {r.name}: done in {trained_now[-1] / 60:.1f} min: "
                    + ", ".join(f"{t} {final[k]:.2f}" for k, t in spec.metrics if k in final)
                    + (f"; {left} runs left, about "
                       f"{left * sum(trained_now) / len(trained_now) / 60:.0f} min" if left else ""))

    logger.info(f"[{task}] counting #Params and FLOPs of each variant ...")
    measures = {op: measure(op) for op in args.operators}
    rows = summarize(runs, measures, spec.metrics)
    differences = paired_differences(rows, spec.metrics)
    table = format_markdown(rows, differences, spec.metrics)
    total = sum(r.wall_time()[0] for r in runs)
    resumed = [r.name for r in runs if r.wall_time()[1] > 1]
    note = (f"{spec.title}: {len(runs)} runs, {note}, seeds {args.seeds}; code: "
            + (f"commit {commit}" if commit else "a working tree (no commit)")
            + f"; training wall time {total / 60:.1f} min in all"
            + (f" (resumed after an interruption: {', '.join(resumed)})" if resumed else "")
            + (f"; GFLOPs at {rows[0]['input_size']} px." if rows else "."))
    figure = os.path.join(out, "compare.png")
    plot_comparison(rows, differences, spec.metrics, figure,
                    f"{spec.title}, one operator per run; commit {(commit or 'none')[:12]}")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n\n" + note + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"task": task, "commit": commit, "rows": rows, "differences": differences,
                   "note": note, "seeds": args.seeds, "settings": runs[0].settings
                   if runs else None, "train_wall_s": round(total, 1)}, f, indent=2)
    print(table + "\n\n" + note, flush=True)
    logger.info(f"[{task}] table: {out}/results.md, figure: {figure}, summary: "
                f"{out}/summary.json")
    if task == "detection" and args.num_vis > 0:
        first = [r for r in runs if r.seed == args.seeds[0] and r.finished()]
        if first:
            logger.info(f"Pictures in {_draw_pictures(first, cfg, code, out, args.num_vis)}")


def main(argv, repo, default_config):
    """``tools/compare_operators.py``: ``repo`` is the repository the tool ran from. Without
    ``--in-place`` the grids run from ``<output-dir>/code``, a worktree of one commit: this
    process checks it out, then hands over to the checkout's own copy of this program."""
    args = get_parser(default_config).parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.operators)) != len(args.operators):
        raise UserValueError("--seeds and --operators must not repeat a value.")
    args.output_dir = os.path.abspath(args.output_dir)
    start = time.time()
    if args.in_place:
        code, commit = Checkout(repo, repo), None
    else:
        code = Checkout(repo, os.path.join(args.output_dir, "code"))
        if os.path.realpath(repo) != os.path.realpath(code.path):
            if args.dry_run and not os.path.isdir(code.path):
                logger.info(f"Would check out {args.commit or 'HEAD'} into {code.path}; the "
                            "plan below uses this working tree.")
                code = Checkout(repo, repo)
            else:
                code.ensure(args.commit)
                # the checkout's copy of this program runs the grids, with its own package
                sys.stdout.flush()
                os.execve(sys.executable, [sys.executable, code.file("tools", "compare_operators.py"),
                                           *_handover_argv(args, repo, code)], code.env())
        commit = code.commit
    for task in args.tasks:
        run_grid(args, code, commit, task)
    logger.info(f"Total wall time of this command {(time.time() - start) / 60:.1f} min.")
    return 0


def _handover_argv(args, repo, code):
    """The command line of the checkout's copy: ``args`` with the config file in the checkout."""
    config = os.path.relpath(os.path.abspath(args.config_file), repo)
    if config.startswith(".."):
        raise UserValueError(f"--config-file {args.config_file} is not inside {repo}; a grid "
                             "runs a checkout of the repository and its configs.")
    argv = ["--tasks", *args.tasks, "--output-dir", args.output_dir, "--operators",
            *args.operators, "--seeds", *map(str, args.seeds), "--config-file",
            code.file(config), "--neck", args.neck, "--epochs", str(args.epochs),
            "--classifier-args=" + args.classifier_args, "--threads", str(args.threads),
            "--num-vis", str(args.num_vis)]
    argv += ["--max-iter", str(args.max_iter)] if args.max_iter else []
    argv += ["--dry-run"] if args.dry_run else []
    return argv + args.opts
