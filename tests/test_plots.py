"""What `dvc plots show` draws: dvc.yaml's top-level plots, each on files a stage writes, and nothing else."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN_TEMPLATES = {"linear", "simple", "scatter", "scatter_jitter", "smooth", "confusion", "confusion_normalized",
                      "bar_horizontal", "bar_horizontal_sorted"}


def definitions() -> dict[str, dict]:
    """dvc.yaml's top-level plots by id."""
    entries = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["plots"]
    return {plot_id: props or {} for entry in entries for plot_id, props in entry.items()}


def files_of(plot_id: str, props: dict) -> set[str]:
    """The data files a definition reads: the keys of x and y when they name files, else the id itself."""
    named = {f for axis in ("x", "y") if isinstance(props.get(axis), dict) for f in props[axis]}
    return named or {plot_id}


def stage_outputs() -> set[str]:
    """Every output path the stages declare (outs, metrics, plots), foreach stages expanded."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {str(out.def_path) for stage in repo.index.stages for out in stage.outs}


def written_by_a_stage(path: str, outputs: set[str]) -> bool:
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in outputs)


def test_every_plot_reads_files_a_stage_declares_and_git_holds():
    outputs = stage_outputs()
    for plot_id, props in definitions().items():
        for path in files_of(plot_id, props):
            # a file no stage writes would keep the plot of an old run after the pipeline moves on
            assert written_by_a_stage(path, outputs), f"plot {plot_id} reads {path}, which no stage declares"
            assert (ROOT / path).is_file(), f"plot {plot_id} reads {path}, which is not in the checkout"


def test_every_plot_has_a_title_axis_labels_and_a_known_template():
    for plot_id, props in definitions().items():
        assert {"title", "x_label", "y_label"} <= set(props), plot_id
        template = props.get("template", "linear")
        assert template in BUILT_IN_TEMPLATES or (ROOT / ".dvc/plots" / f"{template}.json").is_file(), plot_id


def test_no_stage_declares_plots_of_its_own():
    # a stage-level plot is drawn beside any top-level definition of the same file: twice, and untitled
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [name for name, stage in stages.items() if "plots" in (stage.get("do") or stage)] == []


@pytest.fixture(scope="module")
def shown() -> dict:
    out = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["data"]


def test_dvc_draws_exactly_the_declared_plots_filled_and_titled(shown):
    declared = definitions()
    assert list(shown) == list(declared)  # no per-metric dvclive curves, in the declared order
    for plot_id, [rendered] in shown.items():
        spec = rendered["content"]
        assert "<DVC_METRIC_" not in json.dumps(spec), f"{plot_id}: its template left an anchor unfilled"
        title = spec["title"]["text"] if isinstance(spec["title"], dict) else spec["title"]
        assert title == declared[plot_id]["title"]
        assert len(spec["data"]["values"]) > 1, f"{plot_id} draws a single point"


def test_the_plots_page_declares_utf8(tmp_path):
    # vega writes negative ticks with U+2212: a page without a charset shows them as "â^'" in a browser
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True)
    page = (tmp_path / "index.html").read_bytes()
    head = page[:1024].lower()  # browsers look for the charset in the first 1024 bytes only
    assert b'<meta charset="utf-8">' in head
    assert b"<title>ladder: dvc plots</title>" in page
