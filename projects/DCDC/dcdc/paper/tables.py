"""The paper's tables next to one's own numbers.

Detector tables (V-VII, HTC rows included) from run folders: for every
:data:`dcdc.paper.results.DETECTOR_ROWS` record, ``<runs>/<config stem>/metrics.json``
(detectron2's file, read by :mod:`dcdc.engine.metrics`) gives our numbers: its LAST evaluation
(the last line with the row's metric keys, e.g. ``bbox/AP``). #Params and FLOPs are measured on
the model the config builds (:mod:`dcdc.paper.counting`, the paper's counting conventions;
FLOPs without the LSA aggregation, as the paper reports them), never copied from the records.

* :func:`collect`: one :class:`TableRow` per paper row (paper record, our evaluation or why
  there is none, our counts);
* :func:`format_markdown` (one table per paper table, since their columns differ) and
  :func:`format_csv` (one table, every column).

Counts alone: :func:`format_counts` (detectors' #Params and FLOPs,
:func:`dcdc.paper.counting.analyze_detectors`) and :func:`format_classifier_params`
(:func:`dcdc.paper.counting.classifier_param_table`).
"""
import csv
import io
import math
import os
from dataclasses import dataclass, field
from typing import Optional

from ..engine.metrics import last_evaluation, read_metrics
from .results import DETECTOR_ROWS

__all__ = ["METRICS", "TABLE_METRICS", "TableRow", "row_evaluation", "collect", "unmatched_runs",
           "count_row", "format_markdown", "format_csv", "format_counts",
           "format_classifier_params"]

# (DetectorRow field, detectron2 metrics.json key, column title)
BOX = (("box_ap", "bbox/AP", "box AP"), ("box_ap_s", "bbox/APs", "box AP_S"),
       ("box_ap_m", "bbox/APm", "box AP_M"), ("box_ap_l", "bbox/APl", "box AP_L"))
MASK = (("mask_ap", "segm/AP", "mask AP"), ("mask_ap_s", "segm/APs", "mask AP_S"),
        ("mask_ap_m", "segm/APm", "mask AP_M"), ("mask_ap_l", "segm/APl", "mask AP_L"))
PANOPTIC = (("pq", "panoptic_seg/PQ", "PQ"), ("sq", "panoptic_seg/SQ", "SQ"),
            ("rq", "panoptic_seg/RQ", "RQ"))
TABLE_METRICS = {"V": BOX, "VI": BOX + MASK, "VII": PANOPTIC}
METRICS = BOX + MASK + PANOPTIC
TABLE_TITLES = {"V": "Table V: object detection (COCO val, box AP)",
                "VI": "Table VI: instance segmentation (COCO val, box and mask AP; HTC rows)",
                "VII": "Table VII: panoptic segmentation (COCO val)"}


@dataclass
class TableRow:
    """A paper row with our side: ``status`` is "ran (iter N)", "not run", or why a run folder
    gave no numbers; ``ours`` maps metrics.json keys to values."""
    paper: object
    status: str
    ours: dict = field(default_factory=dict)
    params_m: Optional[float] = None
    flops_g: Optional[float] = None
    run_dir: Optional[str] = None


def row_evaluation(metrics_path, keys):
    """The last line of detectron2's ``metrics.json`` holding any of ``keys``, or None.

    Raises if the file only holds the keys with a dataset prefix (several ``DATASETS.TEST``
    give ``<dataset>/bbox/AP``): which dataset is the paper's cannot be guessed."""
    records = read_metrics(metrics_path)
    last = last_evaluation(records, keys)
    prefixed = {k for record in records for k in record for key in keys if k.endswith("/" + key)}
    if last is None and prefixed:
        raise ValueError(f"{metrics_path} holds {sorted(prefixed)[:3]}... but no {keys[0]!r}: the "
                         "run evaluated several test datasets. Evaluate the paper's one alone "
                         "(train_net.py --eval-only DATASETS.TEST \"('coco_2017_val',)\").")
    return last


def _row_keys(row):
    return [key for _, key, _ in TABLE_METRICS[row.table]]


def collect(runs_dir, rows=DETECTOR_ROWS, counts=None):
    """One :class:`TableRow` per paper row. ``counts(row)`` -> ``(params in M, FLOPs in G or
    None)`` measures a row's model (None: not counted)."""
    if not os.path.isdir(runs_dir):
        raise FileNotFoundError(f"--runs {runs_dir} is not a folder; it should hold one folder "
                                "per config, named by its stem (e.g. mask_rcnn_dcdc_r50/), each "
                                "with detectron2's metrics.json.")
    out = []
    for row in rows:
        run_dir = os.path.join(runs_dir, row.config)
        metrics = os.path.join(run_dir, "metrics.json")
        t = TableRow(paper=row, status="not run")
        if os.path.isdir(run_dir):
            t.run_dir = run_dir
            if not os.path.isfile(metrics):
                t.status = "no metrics.json"
            else:
                final = row_evaluation(metrics, _row_keys(row))
                if final is None:
                    t.status = "no evaluation"
                else:
                    t.ours = {key: final[key] for key in _row_keys(row) if key in final}
                    t.status = f"ran (iter {final['iteration']})" if "iteration" in final \
                        else "ran"
        if counts is not None:
            t.params_m, t.flops_g = counts(row)
        out.append(t)
    return out


def unmatched_runs(runs_dir, rows=DETECTOR_ROWS):
    """Sub-folders of ``runs_dir`` with a metrics.json that no paper row is named after."""
    names = {r.config for r in rows}
    return sorted(d for d in os.listdir(runs_dir)
                  if d not in names and os.path.isfile(os.path.join(runs_dir, d, "metrics.json")))


def count_row(row, config_path, flops=True, image_size=(800, 1280)):
    """(#Params in M, FLOPs in G without the LSA aggregation, or None) of a row's model."""
    from .counting import build_from_config, count_flops, count_parameters

    model = build_from_config(config_path(row.config))
    params = count_parameters(model) / 1e6
    flops_g = None
    if flops:
        total, aggregation = count_flops(model, image_size)
        flops_g = (total - aggregation) / 1e9
    return params, flops_g


def _num(v, fmt=".1f"):
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return format(v, fmt)


def _diff(ours, paper):
    if ours is None or paper is None or (isinstance(ours, float) and math.isnan(ours)):
        return None
    return ours - paper


def _counted(t, ours, paper, fmt):
    """'paper / ours' cell of a count; ours is blank when not counted."""
    mine = "not counted" if ours is None else _num(ours, fmt)
    return f"{_num(paper, '.1f') or '-'} / {mine}"


def format_markdown(table_rows):
    """One markdown table per paper table: each metric cell is 'paper / ours (ours - paper)'."""
    blocks = []
    for table in ("V", "VI", "VII"):
        mine = [t for t in table_rows if t.paper.table == table]
        if not mine:
            continue
        metrics = TABLE_METRICS[table]
        head = ["Config", "Detector", "Backbone", "Neck", "Run", "#Params paper / ours (M)",
                "FLOPs paper / ours (G)", *[f"{title} paper / ours (Δ)" for *_, title in metrics]]
        lines = [f"**{TABLE_TITLES[table]}**", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for t in mine:
            p = t.paper
            cells = [p.config, p.detector, p.backbone, p.neck, t.status,
                     _counted(t, t.params_m, p.params_m, ".2f"),
                     _counted(t, t.flops_g, p.flops_g, ".1f")]
            for name, key, _ in metrics:
                paper = getattr(p, name)
                if key not in t.ours:  # no run: the paper's value alone
                    cells.append(f"{_num(paper)} / -" if t.ours else _num(paper))
                    continue
                d = _diff(t.ours[key], paper)
                cells.append(f"{_num(paper)} / {_num(t.ours[key])}"
                             + ("" if d is None else f" ({d:+.1f})"))
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def format_csv(table_rows):
    """One CSV table, a column per (quantity, paper / ours / diff); blank where not applicable."""
    head = ["table", "detector", "backbone", "neck", "config", "status", "params_m_paper",
            "params_m_ours", "flops_g_paper", "flops_g_ours"]
    for name, _, _ in METRICS:
        head += [f"{name}_paper", f"{name}_ours", f"{name}_diff"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for t in table_rows:
        p = t.paper
        line = [p.table, p.detector, p.backbone, p.neck, p.config, t.status,
                _num(p.params_m, "g"), _num(t.params_m, ".4f"), _num(p.flops_g, "g"),
                _num(t.flops_g, ".4f")]
        for name, key, _ in METRICS:
            paper = getattr(p, name)
            ours = t.ours.get(key)
            line += [_num(paper, "g"), _num(ours, ".4f"), _num(_diff(ours, paper), ".4f")]
        writer.writerow(line)
    return buf.getvalue()


def format_counts(results):
    """A markdown table of :func:`dcdc.paper.counting.analyze_detectors`' results."""
    from .counting import percent_change

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    lines = [
        "| Table | Detector | Backbone | Neck | #Params paper / ours (M) | diff | "
        "FLOPs paper (G) | ours w/o agg. | ours with agg. | ΔParams paper / ours | "
        "ΔFLOPs paper / ours w/o agg. / with agg. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = r["row"]
        dp = (f"{r['paper_dparams']:+.0f}% / {r['dparams']:+.0f}%" if "dparams" in r else "")
        df = (f"{r['paper_dflops']:+.0f}% / {r['dflops']:+.0f}% / {r['dflops_with_agg']:+.0f}%"
              if "dflops" in r else "")
        lines.append(
            f"| {row.table} | {row.detector} | {row.backbone} | {row.neck} | "
            f"{row.params_m:.1f} / {r['params']:.2f} | "
            f"{percent_change(r['params'], row.params_m):+.1f}% | {f(row.flops_g, '.1f')} | "
            f"{f(r.get('flops'), '.1f')} | {f(r.get('flops_with_agg'), '.1f')} | {dp} | {df} |"
        )
    return "\n".join(lines)


def format_classifier_params(rows):
    """A GitHub markdown table of :func:`dcdc.paper.counting.classifier_param_table`'s rows."""
    from tabulate import tabulate

    cells = [(name, f"{ours:.2f}", f"{paper:.2f}", f"{diff:+.2%}")
             for name, ours, paper, diff in rows]
    return tabulate(cells, headers=["model", "ours #Params (M)", "paper #Params (M)", "diff"],
                    tablefmt="github")
