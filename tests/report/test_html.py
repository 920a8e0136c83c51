"""`liverctl.report.html`: every string from a run folder is escaped; the runs table is `liverctl.runs.table`'s."""

from __future__ import annotations

from run_fixtures import make_config, make_run

from liverctl.experiment import folder
from liverctl.report.build import write_report
from liverctl.report.html import experiment_html
from liverctl.runs.summary import scan_runs
from liverctl.runs.table import cells, columns, varied_settings


def test_index_escapes_names_settings_messages_and_config(tmp_path):
    root = tmp_path / "runs"
    evil = "<script>alert(1)</script>"
    make_run(root, "a<b>", settings={"loss.name": evil})
    make_run(root, "plain", start_ts=1_700_000_100)
    (root / "a<b>" / "events.jsonl").open("a").write(
        '{"v":1,"ts":1700000999,"seq":99,"run":"a","kind":"note","epoch":3,"step":12,"message":"<img src=x>"}\n')
    page = write_report([root / "a<b>", root / "plain"], tmp_path / "rep", overlays=False).index_html.read_text()
    assert "<script>" not in page and "a<b>" not in page and "<img src=x>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x&gt;" in page and "a&lt;b&gt;" in page


def test_index_table_is_the_runs_table(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a", settings={"optim.lr": 3e-4})
    make_run(root, "b", start_ts=1_700_000_100)
    page = write_report([root / "a", root / "b"], tmp_path / "rep", overlays=False).index_html.read_text()
    summaries = scan_runs(root)
    varied = varied_settings(summaries)
    assert "optim.lr" in varied
    head = "".join(f"<th>{c.header}</th>" for c in columns(varied))
    assert head in page
    for s in summaries:
        for text in cells(s, varied):
            assert f">{text}</td>" in page


def test_experiment_tables_are_escaped(tmp_path):
    exp = tmp_path / "cv"
    exp.mkdir()
    cfg = make_config("demo")
    option = {"threshold": 0.5, "post": "<largest>", "volume_dice": 0.9, "slice_dice": 0.95, "global_dice": 0.91}
    folder.write_summary(exp, {"name": "cv<x>", "preset": "demo", "store": "s", "folds": [0, 1], "config": cfg,
                               "status": "completed", "fold_results": {"0": {"run": "fold-0", "status": "done"}},
                               "decision": {"threshold": 0.5, "post": "<largest>", "options": [option]}})
    text = experiment_html(exp)
    assert "<x>" not in text and "<largest>" not in text
    assert "cv&lt;x&gt;" in text and "&lt;largest&gt;" in text and "<th>out-of-fold cases</th>" in text
    assert "0.5 *" in text  # the chosen option is marked


def test_report_of_an_experiment_prints_and_renders_its_option_table(tmp_path):
    import tomli_w
    from typer.testing import CliRunner

    from liverctl.cli import app

    runs_dir = tmp_path / "runs"
    exp = runs_dir / "cv"
    exp.mkdir(parents=True)
    cfg = make_config("demo")
    option = {"threshold": 0.5, "post": "largest", "volume_dice": 0.9, "slice_dice": 0.95, "global_dice": 0.91}
    folder.write_summary(exp, {"name": "cv", "preset": "demo", "store": "s", "folds": [0, 1], "config": cfg,
                               "status": "completed", "fold_results": {},
                               "decision": {"threshold": 0.5, "post": "largest", "options": [option]}})
    for fold in (0, 1):
        folder.fold_dir(exp, fold).mkdir()
        (folder.fold_dir(exp, fold) / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")
    result = CliRunner().invoke(app, ["report", "cv", "--runs-dir", str(runs_dir), "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert "experiment cv" in result.stdout and "out-of-fold options" in result.stdout
    page = (exp / "report" / "index.html").read_text(encoding="utf-8")
    assert "Out-of-fold options" in page and "fold-0" in page and "fold-1" in page

    # an experiment and a run side by side go to reports/<run>+<run>, as several runs do, not into the
    # experiment's own report folder (where `report cv` writes; it was replaced by the pair's report)
    make_run(runs_dir, "v5-f1")
    both = CliRunner().invoke(app, ["report", "v5-f1", "cv", "--runs-dir", str(runs_dir), "--no-overlays"])
    assert both.exit_code == 0, both.output
    pair = (tmp_path / "reports" / "v5-f1+cv" / "index.html").read_text(encoding="utf-8")
    assert "v5-f1" in pair and "fold-0" in pair and "Out-of-fold options" in pair
    assert (exp / "report" / "index.html").read_text(encoding="utf-8") == page


def test_a_hostile_message_is_one_cut_line_in_the_events_table(tmp_path):
    """A run_end message of 10 MB went whole into index.html (one run folder from someone else made a page of
    10 MB); now it is one line of at most REPORT_MESSAGE_LIMIT characters, control characters gone."""
    from liverctl.report.html import REPORT_MESSAGE_LIMIT

    root = tmp_path / "runs"
    make_run(root, "crash", status="failed", message="boom\x1b[31m\nline two " + "y" * 500_000)  # under MAX_LINE_BYTES
    page = write_report([root / "crash"], tmp_path / "rep", overlays=False).index_html.read_text()
    assert len(page) < 100_000 and "\x1b" not in page
    assert "boom [31m line two " + "y" * (REPORT_MESSAGE_LIMIT - 20) + "…" in page
