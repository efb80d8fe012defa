"""A miniature of the paper's operator comparison (Tables III / V) on the built-in shapes data.

The quickstart Panoptic FPN (narrow R-26, ``configs/quickstart_panoptic_fpn_dcdc_shapes.yaml``)
is trained once per spatial operator (``MODEL.DCDC.OPERATOR``: a plain 3x3 conv, RedNet's
involution, the LSA branch alone, DCDC) and per seed, with one neck (``MODEL.DCDC.NECK``) and one
schedule for all. Only the operator and the seed differ between runs, so differences in box AP,
mask AP and PQ are the operator's (up to the seed-to-seed spread the table also reports).

* :func:`scaled_schedule`: the base config's schedule shrunk to ``max_iter`` iterations (LR steps
  and warm-up scaled with it), one evaluation at the end.
* :class:`Run`: one (operator, seed) training through ``train_net.py`` in a child process, in
  ``<output>/<operator>_seed<N>/``. A run whose final evaluation is in its ``metrics.json`` is
  finished and skipped; an unfinished one continues from its last checkpoint (``--resume``);
  a folder trained with other settings raises instead of being mixed into the table.
* :func:`measure_model`: #Params and FLOPs of each variant (:mod:`dcdc.modeling.analysis`).
* :func:`summarize` / :func:`format_markdown` / :func:`plot_comparison`: mean and spread over
  seeds, as a markdown table and one matplotlib figure.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

from detectron2.modeling import build_model

from ..config import get_dcdc_cfg
from ..layers.dcdc_conv import OPERATORS
from ..modeling.analysis import AGGREGATION_OPS, add_aggregation_handles, count_parameters
from .errors import UserValueError

__all__ = ["DISPLAY_ORDER", "OPERATOR_NAMES", "METRICS", "scaled_schedule", "Run", "read_metrics",
           "final_evaluation", "measure_model", "summarize", "format_markdown", "plot_comparison"]

# Table order: the baseline first, then the dynamic operators from the simplest to the paper's.
DISPLAY_ORDER = ("conv", "involution", "lsa", "dcdc")
assert set(DISPLAY_ORDER) == set(OPERATORS), "every operator of dcdc.layers has a table row"
OPERATOR_NAMES = {"conv": "3x3 conv (ResNet)", "involution": "involution (RedNet)",
                  "lsa": "LSA only", "dcdc": "DCDC (LSA + GSI)"}
# (metrics.json key, column title) of the final evaluation, in table order.
METRICS = (("bbox/AP", "box AP"), ("segm/AP", "mask AP"), ("panoptic_seg/PQ", "PQ"))
EVAL_GROUPS = ("bbox", "segm", "panoptic_seg", "sem_seg")
# The file a run folder is claimed by: the settings it was trained with and its wall times.
RUN_FILE = "compare_run.json"


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


def read_metrics(path):
    """detectron2's ``metrics.json`` (one JSON dict per line) as a list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_evaluation(records):
    """The last record holding evaluation results (``bbox/AP``, ``panoptic_seg/PQ``, ...), or
    None."""
    evals = [r for r in records if any(k.split("/")[0] in EVAL_GROUPS and "/" in k for k in r)]
    return evals[-1] if evals else None


class Run:
    """One training of the comparison: ``operator`` and ``seed`` on top of ``base_opts``."""

    def __init__(self, root, train_net, config_file, operator, seed, base_opts, max_iter):
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}.")
        self.operator, self.seed, self.max_iter = operator, seed, max_iter
        self.train_net = os.path.abspath(train_net)
        self.config_file = os.path.abspath(config_file)
        self.output_dir = os.path.join(os.path.abspath(root), f"{operator}_seed{seed}")
        self.opts = [*base_opts, "MODEL.DCDC.OPERATOR", operator, "SEED", str(seed)]

    @property
    def name(self):
        return f"{self.operator}_seed{self.seed}"

    def _settings(self):
        return {"config_file": self.config_file, "opts": self.opts}

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
                raise RuntimeError(
                    f"{self.output_dir} exists, is not empty and has no {RUN_FILE}: it is not a "
                    "run of this comparison. Move it away or choose another --output-dir.")
            return
        if state["settings"] != self._settings():
            raise RuntimeError(
                f"{self.output_dir} was trained with other settings ({state['settings']}) than "
                f"this command asks for ({self._settings()}). Delete the folder to retrain it, "
                "or give the new settings another --output-dir.")

    def evaluation(self):
        """The final evaluation (after the last iteration), or None if the run has not ended."""
        path = os.path.join(self.output_dir, "metrics.json")
        if not os.path.isfile(path):
            return None
        final = final_evaluation(read_metrics(path))
        # an evaluation after the last step is stored at iteration max_iter, one triggered by
        # TEST.EVAL_PERIOD at the last step at max_iter - 1
        if final is None or final.get("iteration") not in (self.max_iter - 1, self.max_iter):
            return None
        return final

    def finished(self):
        self.check_folder()
        return (self.evaluation() is not None
                and os.path.isfile(os.path.join(self.output_dir, "model_final.pth")))

    def wall_time(self):
        """Seconds of ``train_net.py`` (all attempts together), and the number of attempts."""
        state = self._state() or {"attempts": []}
        return sum(a["wall_s"] for a in state["attempts"]), len(state["attempts"])

    def train(self, threads=1, log=print, stdout=None):
        """Train (or continue) in a child ``train_net.py --resume``; raises if it fails."""
        self.check_folder()
        os.makedirs(self.output_dir, exist_ok=True)
        state = self._state() or {"settings": self._settings(), "attempts": []}
        cmd = [sys.executable, self.train_net, "--resume", "--config-file", self.config_file,
               "OUTPUT_DIR", self.output_dir, *self.opts]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        log(f"[{self.name}] " + " ".join(cmd))
        start = time.time()
        with open(os.path.join(self.output_dir, "train_net.log"), "a") as f:
            result = subprocess.run(cmd, env=env, cwd=os.path.dirname(self.train_net),
                                    stdout=stdout or f,
                                    stderr=subprocess.STDOUT)
        state["attempts"].append({"wall_s": round(time.time() - start, 1),
                                  "returncode": result.returncode,
                                  "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
        with open(os.path.join(self.output_dir, RUN_FILE), "w") as f:
            json.dump(state, f, indent=2)
        if result.returncode != 0:
            raise RuntimeError(f"[{self.name}] train_net.py failed with exit status "
                               f"{result.returncode}; see {self.output_dir}/train_net.log.")
        if self.evaluation() is None:
            raise RuntimeError(f"[{self.name}] training ended without a final evaluation in "
                               f"{self.output_dir}/metrics.json.")

    def remove(self):
        """Delete the run folder (only one this comparison claimed)."""
        if self._state() is not None:
            shutil.rmtree(self.output_dir)


@torch.no_grad()
def measure_model(config_file, opts, operator):
    """#Params (whole model, M), backbone + neck #Params (M) and backbone + neck FLOPs (G MACs,
    without and with the LSA aggregation) of one variant at the config's test input size.

    FLOPs cover the part the operators change; the heads are the same in every variant."""
    from fvcore.nn import FlopCountAnalysis

    cfg = get_dcdc_cfg(config_file, [*opts, "MODEL.DCDC.OPERATOR", operator, "MODEL.DEVICE",
                                     "cpu"])
    model = build_model(cfg).eval()
    size = cfg.INPUT.MIN_SIZE_TEST
    analysis = add_aggregation_handles(FlopCountAnalysis(model.backbone,
                                                         (torch.zeros(1, 3, size, size),)))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    # fvcore keys by_operator() on the op name after "::"
    aggregation = sum(by_op.get(name.split("::")[-1], 0) for name in AGGREGATION_OPS)
    total = sum(by_op.values())
    return {"params_m": count_parameters(model) / 1e6,
            "backbone_params_m": count_parameters(model.backbone) / 1e6,
            "flops_g": (total - aggregation) / 1e9, "flops_with_agg_g": total / 1e9,
            "input_size": size}


def summarize(runs, measures):
    """One dict per operator (in :data:`DISPLAY_ORDER`): measures, and for each metric the
    per-seed values, mean and sample standard deviation (0 with one seed); finished runs only."""
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
        for key, _ in METRICS:
            values = [float(e[key]) for _, e in done if key in e]
            row[key] = {"values": values,
                        "mean": float(np.mean(values)) if values else None,
                        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
        walls = [r.wall_time()[0] for r, _ in done]
        row["wall_s"] = {"values": walls, "mean": float(np.mean(walls)) if walls else None}
        rows.append(row)
    return rows


def format_markdown(rows):
    """The summary as a markdown table (mean ± sample std over seeds)."""
    head = ["Operator", "#Params (M)", "backbone+neck #Params (M)",
            "backbone+neck GFLOPs w/o / with agg.", *[t for _, t in METRICS], "seeds",
            "wall time / run (min)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"]]
        if "params_m" in r:
            cells += [f"{r['params_m']:.2f}", f"{r['backbone_params_m']:.2f}",
                      f"{r['flops_g']:.3f} / {r['flops_with_agg_g']:.3f}"]
        else:
            cells += ["not counted"] * 3
        for key, _ in METRICS:
            m = r[key]
            cells.append("not run" if m["mean"] is None else
                         f"{m['mean']:.1f} ± {m['std']:.1f}" if len(m["values"]) > 1 else
                         f"{m['mean']:.1f}")
        seeds = ", ".join(map(str, r["seeds"])) or "-"
        if r["missing"]:
            seeds += f" (missing {', '.join(map(str, r['missing']))})"
        cells.append(seeds)
        cells.append("-" if r["wall_s"]["mean"] is None else f"{r['wall_s']['mean'] / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_comparison(rows, path, title):
    """One figure: each metric per operator (bar = mean, dots = seeds), and #Params / FLOPs /
    wall time per operator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"].replace(" (", "\n(") for r in rows]
    x = np.arange(len(rows))
    panels = [(t, k) for k, t in METRICS] + [("#Params (M)", "params_m"),
                                             ("backbone+neck GFLOPs", "flops_g"),
                                             ("wall time / run (min)", "wall_s")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (label, key) in zip(axes, panels):
        for i, r in enumerate(rows):
            v = r.get(key)
            if isinstance(v, dict):
                values = v["values"] if key != "wall_s" else [w / 60 for w in v["values"]]
                if not values:
                    continue
                ax.bar(i, np.mean(values), color=colors[i % len(colors)], alpha=0.6)
                ax.plot([i] * len(values), values, "o", color="black", ms=3)
            elif v is not None:
                ax.bar(i, v, color=colors[i % len(colors)], alpha=0.6)
        ax.set_title(label, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=6.5)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    # leave the top for a title of up to two lines
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
