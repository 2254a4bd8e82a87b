"""Labels stage: CSV import keyed by post id, md5 or path; every error names file and line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ganime_steps import labels


def write_csv(path, text):
    path.write_text(text)
    return path


def test_import_by_id_md5_and_path(posts, tmp_path):
    table = pd.read_parquet(posts)
    md5s, files = table["md5"].tolist(), table["file"].tolist()
    a = write_csv(tmp_path / "a.csv", "post_id,label\n1,1\n2,0\n3,chibi\n")
    b = write_csv(tmp_path / "b.csv", f"md5,label\n{md5s[3]},no\n{md5s[0]},yes\n")
    c = write_csv(tmp_path / "c.csv", f"file,label\n{files[5]},not_chibi\n")
    summary = labels.run(posts=posts, csvs=[a, b, c], task="chibi", out=tmp_path / "out" / "chibi.parquet")
    assert (summary.n_labels, summary.positive, summary.negative) == (5, 2, 3)  # post 1 labelled twice, agreeing
    out = pd.read_parquet(tmp_path / "out" / "chibi.parquet")
    assert dict(zip(out["post_id"], out["label"], strict=True)) == {1: 1, 2: 0, 3: 1, 4: 0, 6: 0}
    assert json.loads((tmp_path / "out" / "chibi_counts.json").read_text())["positive"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("post_id,label\n1,1\n999,0\n", "bad.csv:3: post_id 999 is not among the scraped posts"),
        ("post_id,label\n1,maybe\n", "bad.csv:2: label 'maybe' is not a chibi label"),
        ("post_id,label\n1,1\n1,0\n", "conflicting chibi labels"),
        ("name,value\n1,1\n", "bad.csv: header must have 'label'"),
        ("post_id,label\nabc,1\n", "bad.csv:2: post_id 'abc' is not a number"),
    ],
)
def test_bad_labels_name_file_and_line(posts, tmp_path, capsys, text, expected):
    bad = write_csv(tmp_path / "bad.csv", text)
    code = labels.main(
        ["--posts", str(posts), "--task", "chibi", "--csv", str(bad), "--out", str(tmp_path / "o.parquet")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.parquet").exists()


def test_missing_file(posts, tmp_path, capsys):
    code = labels.main(
        [
            "--posts",
            str(posts),
            "--task",
            "multi",
            "--csv",
            str(tmp_path / "x.csv"),
            "--out",
            str(tmp_path / "o.parquet"),
        ]
    )
    assert code == 2 and "labels.multi" in capsys.readouterr().err
