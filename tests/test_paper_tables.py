"""tools/paper_tables.py (dcdc.paper.cli.paper_tables) on a made-up runs folder: each metric
lands in its row and column, beside the paper's value, with the difference; runs that are missing
or have no evaluation say so; the CSV parses; #Params are measured on the config's model."""
import csv
import io
import json
import math
import os

import pytest

from dcdc.paper.cli import paper_tables
from dcdc.paper.counting import build_from_config, count_parameters
from dcdc.paper.results import DETECTOR_ROWS, detector_row
from dcdc.paper.tables import METRICS, TABLE_METRICS, row_evaluation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Made-up numbers: paper value + a per-row offset (never a rounding tie), so each cell's
# difference is known.
OFFSETS = {"retinanet_r50": -1.31, "mask_rcnn_dcdc_r50": 0.72, "panoptic_fpn_dcdc_r50": -2.44}


def _ours(config):
    row = detector_row(config)
    return {key: getattr(row, name) + OFFSETS[config] for name, key, _ in TABLE_METRICS[row.table]}


def _write(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for config in OFFSETS:
        early = {k: 1.0 for k in _ours(config)}  # an earlier evaluation, to be ignored
        _write(root / config / "metrics.json",
               [{"iteration": 19, "total_loss": 3.0}, {"iteration": 4999, **early},
                {"iteration": 89999, **_ours(config)},
                {"iteration": 90009, "total_loss": 1.0}])  # training line after the evaluation
    _write(root / "faster_rcnn_r50" / "metrics.json", [{"iteration": 9, "total_loss": 2.0}])
    os.makedirs(root / "htc_r50")  # a run folder without metrics.json
    _write(root / "not_a_paper_config" / "metrics.json", [{"iteration": 1, "bbox/AP": 1.0}])
    return str(root)


def _cells(markdown, config):
    """{column title: cell} of ``config``'s markdown line, using its table's header."""
    header = None
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Config":
            header = cells
        elif cells[0] == config:
            return dict(zip(header, cells))
    raise AssertionError(f"no line for {config}")


def test_markdown_places_values_and_reports_missing(runs, capsys):
    paper_tables(["--runs", runs, "--no-count"])
    out, err = capsys.readouterr()
    for config, offset in OFFSETS.items():
        row, ours = detector_row(config), _ours(config)
        cells = _cells(out, config)
        assert cells["Run"] == "ran (iter 89999)"
        for name, key, title in TABLE_METRICS[row.table]:
            paper = getattr(row, name)
            assert cells[f"{title} paper / ours (Δ)"] == \
                f"{paper:.1f} / {ours[key]:.1f} ({offset:+.1f})", (config, title)
        assert cells["#Params paper / ours (M)"] == f"{row.params_m:.1f} / not counted"
    # every paper row is printed once; the rest show the paper's values and why ours are missing
    for row in DETECTOR_ROWS:
        assert sum(line.startswith(f"| {row.config} |") for line in out.splitlines()) == 1
    assert _cells(out, "faster_rcnn_r50")["Run"] == "no evaluation"
    assert _cells(out, "htc_r50")["Run"] == "no metrics.json"
    other = _cells(out, "mask_rcnn_r50")
    assert other["Run"] == "not run" and other["mask AP paper / ours (Δ)"] == \
        f"{detector_row('mask_rcnn_r50').mask_ap:.1f}"
    assert "not_a_paper_config" in err


def test_csv_parses_with_every_row(runs, capsys):
    paper_tables(["--runs", runs, "--no-count", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["config"] for r in rows] == [r.config for r in DETECTOR_ROWS]
    by_config = {r["config"]: r for r in rows}
    for config, offset in OFFSETS.items():
        paper_row, line = detector_row(config), by_config[config]
        for name, key, _ in METRICS:
            paper = getattr(paper_row, name)
            if key in _ours(config):
                assert float(line[f"{name}_ours"]) == pytest.approx(paper + offset)
                assert float(line[f"{name}_diff"]) == pytest.approx(offset)
            else:  # a column of another table: blank
                assert line[f"{name}_ours"] == line[f"{name}_diff"] == ""
            assert (line[f"{name}_paper"] == "" if paper is None
                    else float(line[f"{name}_paper"]) == paper)
    untouched = by_config["panoptic_fpn_r50"]
    assert untouched["status"] == "not run" and untouched["pq_ours"] == ""
    assert float(untouched["pq_paper"]) == detector_row("panoptic_fpn_r50").pq


def test_params_are_measured_not_copied(runs, capsys):
    config = "retinanet_dcdc_r26_dcdc_neck"
    paper_tables(["--runs", runs, "--configs", config, "--no-flops", "--format", "csv"])
    (line,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    expected = count_parameters(build_from_config(os.path.join(REPO, "configs",
                                                               config + ".yaml"))) / 1e6
    assert float(line["params_m_ours"]) == pytest.approx(expected, abs=1e-4)
    assert line["flops_g_ours"] == ""  # --no-flops
    # our model is the paper's within 2%, and the value is our own count, not the record's
    assert math.isclose(expected, detector_row(config).params_m, rel_tol=0.02)
    assert float(line["params_m_ours"]) != detector_row(config).params_m


def test_bad_input_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        paper_tables(["--runs", str(tmp_path / "missing"), "--no-count"])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        paper_tables(["--runs", str(tmp_path), "--configs", "mask_rcnn_r51"])
    assert "no paper row for ['mask_rcnn_r51']" in capsys.readouterr().err
    # several test datasets prefix the keys: which one is the paper's cannot be guessed
    _write(str(tmp_path / "m.json"), [{"iteration": 5, "coco_2017_val/bbox/AP": 30.0,
                                       "other_val/bbox/AP": 20.0}])
    with pytest.raises(ValueError, match="several test datasets"):
        row_evaluation(str(tmp_path / "m.json"), ["bbox/AP"])
    (tmp_path / "bad.json").write_text("not json\n")
    with pytest.raises(ValueError, match="line 1, is not JSON"):
        row_evaluation(str(tmp_path / "bad.json"), ["bbox/AP"])
