"""Labels stage: CSV import keyed by post id, md5 or path; every error names file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ganime_steps import labels
from ganime_steps.common import GanimeError


def write_csv(path, text):
    path.write_text(text)
    return path


def test_import_by_id_md5_and_path(posts, tmp_path):
    table = pd.read_parquet(posts)
    md5s, files = table["md5"].tolist(), table["file"].tolist()
    a = write_csv(tmp_path / "a.csv", "post_id,label\n1,1\n2,0\n3,chibi\n")
    b = write_csv(tmp_path / "b.csv", f"md5,label\n{md5s[3]},no\n{md5s[0]},yes\n")
    c = write_csv(tmp_path / "c.csv", f"file,label\n{files[5]},not_chibi\n")
    summary = labels.run_labels(posts=posts, csvs=[a, b, c], task="chibi", out=tmp_path / "out" / "chibi.parquet")
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


# ---------------------------------------------------------------------------------------------------- other formats


def ls_task(task_id, data, choices, cancelled=False):
    result = [{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": choices}}]
    return {
        "id": task_id,
        "data": data,
        "annotations": [{"id": 100 + task_id, "result": result, "was_cancelled": cancelled}],
    }


def test_label_studio_json_export(posts, tmp_path):
    table = pd.read_parquet(posts)
    md5s, files = table["md5"].tolist(), table["file"].tolist()
    tasks = [
        # the label queue's own tasks carry post_id/source/md5; a URL is enough otherwise
        ls_task(1, {"image": f"/data/local-files/?d=scrape/{files[0]}", "post_id": 1, "source": "test"}, ["chibi"]),
        ls_task(2, {"image": f"/data/local-files/?d=scrape/{files[1]}"}, ["Not chibi"]),
        ls_task(3, {"image": f"http://example.org/upload/1/8f3a9c1e-{md5s[2]}.png"}, ["yes"]),
        ls_task(4, {"image": f"/data/local-files/?d={files[3]}"}, ["no"], cancelled=True),  # ignored
        {"id": 5, "data": {"image": files[4]}, "annotations": []},  # not labelled yet: ignored
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    summary = labels.run_labels(posts=posts, label_files=[str(path)], task="chibi", out=tmp_path / "chibi.parquet")
    out = pd.read_parquet(tmp_path / "chibi.parquet")
    assert dict(zip(out["post_id"], out["label"], strict=True)) == {1: 1, 2: 0, 3: 1}
    assert summary.classes == {"chibi": 2, "not_chibi": 1}
    assert out["origin"].iloc[0] == f"{path}#task 1 annotation 101"


def test_label_studio_min_and_csv_exports(posts, tmp_path):
    table = pd.read_parquet(posts)
    files = table["file"].tolist()
    json_min = tmp_path / "min.json"
    json_min.write_text(
        json.dumps(
            [
                {"image": f"/data/local-files/?d={files[0]}", "id": 1, "choice": "chibi", "annotator": 1},
                {"image": f"/data/local-files/?d={files[1]}", "id": 2, "choice": {"choices": ["not_chibi"]}},
                {"image": f"/data/local-files/?d={files[2]}", "id": 3},  # skipped task
            ]
        )
    )
    ls_csv = tmp_path / "ls.csv"
    ls_csv.write_text(
        "image,id,choice,annotator,annotation_id,created_at,updated_at,lead_time\n"
        f"/data/local-files/?d={files[3]},7,not_chibi,1,3,2024,2024,1.5\n"
        f"/data/local-files/?d={files[4]},8,chibi,1,4,2024,2024,2.5\n"
    )
    assert labels.detect_format(json_min) == "label_studio_min"
    assert labels.detect_format(ls_csv) == "label_studio_csv"
    summary = labels.run_labels(
        posts=posts, label_files=[str(json_min), str(ls_csv)], task="chibi", out=tmp_path / "c.parquet"
    )
    out = pd.read_parquet(tmp_path / "c.parquet")
    assert dict(zip(out["post_id"], out["label"], strict=True)) == {1: 1, 2: 0, 4: 0, 5: 1}
    assert summary.per_label_file == {
        str(json_min): {"positive": 1, "negative": 1},
        str(ls_csv): {"positive": 1, "negative": 1},
    }


def test_folder_per_class_by_name_and_content(posts, tmp_path):
    table = pd.read_parquet(posts)
    root = tmp_path / "labels" / "chibi"
    (root / "yes").mkdir(parents=True)
    (root / "no").mkdir()
    scrape = posts.parent
    # named by md5 (copied from the scrape) and renamed by a person (matched by content md5)
    (root / "yes" / f"{table['md5'][0]}.png").write_bytes((scrape / table["file"][0]).read_bytes())
    (root / "yes" / "my favourite.png").write_bytes((scrape / table["file"][1]).read_bytes())
    (root / "no" / "IMG_0003.PNG").write_bytes((scrape / table["file"][2]).read_bytes())
    (root / "no" / ".DS_Store").write_bytes(b"junk")  # hidden and not an image: ignored
    assert labels.detect_format(root) == "folder"
    assert sorted(Path(f).name for f in labels.label_file_inputs([str(root)])) == sorted(
        [f"{table['md5'][0]}.png", "my favourite.png", "IMG_0003.PNG"]
    )
    summary = labels.run_labels(posts=posts, label_files=[str(root)], task="chibi", out=tmp_path / "c.parquet")
    out = pd.read_parquet(tmp_path / "c.parquet")
    assert dict(zip(out["post_id"], out["label"], strict=True)) == {1: 1, 2: 1, 3: 0}
    assert (summary.positive, summary.negative) == (2, 1)


def test_explicit_format_and_config_shapes(posts, tmp_path):
    table = pd.read_parquet(posts)
    odd = tmp_path / "labels.txt"  # an extension that says nothing: the format is given explicitly
    odd.write_text(f"md5,label\n{table['md5'][0]},1\n{table['md5'][1]},0\n")
    with pytest.raises(GanimeError, match="cannot tell the label format"):
        labels.parse_label_file(str(odd))
    assert labels.parse_label_file(f"csv={odd}") == labels.LabelFile(odd, "csv")
    assert labels.parse_label_file({"path": str(odd), "format": "csv"}) == labels.LabelFile(odd, "csv")
    with pytest.raises(GanimeError, match="format 'xml' is unknown"):
        labels.parse_label_file({"path": str(odd), "format": "xml"})
    assert labels.label_file_args([{"path": "a.txt", "format": "csv"}, "b.json"]) == ["csv=a.txt", "b.json"]
    assert labels.label_file_args("x.csv") == ["x.csv"]  # a single path string keeps working
    summary = labels.run_labels(
        posts=posts, label_files=[{"path": str(odd), "format": "csv"}], task="chibi", out=tmp_path / "o.parquet"
    )
    assert summary.n_labels == 2


def test_every_problem_is_listed_with_file_and_record(posts, tmp_path, capsys):
    table = pd.read_parquet(posts)
    a = write_csv(tmp_path / "a.csv", "post_id,label\n1,1\n2,0\n999,1\n")
    studio = tmp_path / "studio.json"
    studio.write_text(
        json.dumps(
            [
                ls_task(1, {"post_id": 1}, ["not_chibi"]),  # conflicts with a.csv:2
                ls_task(2, {"image": "/data/local-files/?d=x/ffffffffffffffffffffffffffffffff.png"}, ["chibi"]),
                ls_task(3, {"post_id": 3}, ["maybe"]),  # unknown class
            ]
        )
    )
    folder = tmp_path / "chibi"
    (folder / "unsure").mkdir(parents=True)
    (folder / "unsure" / "x.png").write_bytes((posts.parent / table["file"][5]).read_bytes())
    (folder / "yes").mkdir()
    (folder / "yes" / "stranger.png").write_bytes(b"\x89PNG not among the posts")
    out = tmp_path / "out" / "chibi.parquet"
    argv = ["--posts", str(posts), "--task", "chibi", "--label-file", str(a), str(studio), f"folder={folder}"]
    assert labels.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{a}:4: post_id 999 is not among the scraped posts" in err and "6 problems in all" in err
    problems = pd.read_csv(out.with_name("chibi_problems.csv"))
    assert problems["kind"].value_counts().to_dict() == {"unknown_image": 3, "unknown_class": 2, "conflict": 1}
    wheres = problems.set_index("kind")["where"]
    assert f"{studio}#task 3 annotation 103" in wheres["unknown_class"].tolist()
    assert str(folder / "unsure" / "x.png") in wheres["unknown_class"].tolist()
    assert str(folder / "yes" / "stranger.png") in wheres["unknown_image"].tolist()
    conflict = problems.loc[problems["kind"] == "conflict", "message"].item()
    assert f"{a}:2 (1)" in conflict and f"{studio}#task 1 annotation 101 (0)" in conflict
    assert not out.exists()
    # fixed: the stale problem list goes away
    a.write_text("post_id,label\n1,0\n")
    labels.run_labels(posts=posts, label_files=[str(a)], task="chibi", out=out)
    assert out.exists() and not out.with_name("chibi_problems.csv").exists()


def test_label_file_inputs_list_missing_paths_for_the_workflow(tmp_path):
    assert labels.label_file_inputs(["labels/chibi.csv", "folder=labels/none"]) == ["labels/chibi.csv", "labels/none"]


def test_no_labels_at_all(posts, tmp_path):
    empty = write_csv(tmp_path / "empty.csv", "post_id,label\n")
    with pytest.raises(GanimeError, match="hold no labels"):
        labels.run_labels(posts=posts, label_files=[str(empty)], task="chibi", out=tmp_path / "o.parquet")


# ---------------------------------------------------------------------------------------------------- Excel exports


@pytest.mark.parametrize(
    ("encoding", "sep"),
    [("utf-16", ","), ("utf-16", "\t"), ("utf-8-sig", ","), ("utf-8-sig", ";"), ("cp1252", ","), ("latin-1", ",")],
)
def test_excel_exports_are_read(posts, tmp_path, encoding, sep):
    rows = [["Post ID", " Label ", "Comment"], ["1", "1.0", "café"], ["2", "0.0", "naïve"], ["3.0", "TRUE", "ok"]]
    path = tmp_path / "excel.csv"
    path.write_bytes("".join(sep.join(r) + "\r\n" for r in rows).encode(encoding))
    assert labels.detect_format(path) == "csv"
    code = labels.main(
        ["--posts", str(posts), "--task", "chibi", "--label-file", str(path), "--out", str(tmp_path / "o.parquet")]
    )
    assert code == 0
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert dict(zip(out["post_id"], out["label"], strict=True)) == {1: 1, 2: 0, 3: 1}


def test_cp1252_only_characters_are_read(posts, tmp_path):
    path = tmp_path / "euro.csv"
    path.write_bytes("post_id,label,note\n1,yes,5 € “quoted”\n".encode("cp1252"))
    labels.run_labels(posts=posts, csvs=[path], task="chibi", out=tmp_path / "o.parquet")
    assert pd.read_parquet(tmp_path / "o.parquet")["post_id"].tolist() == [1]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40, "is an Excel workbook"),
        ("post_id,label\n1,1\n".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
        (b"\xef\xbb\xbfpost_id,label\n1,\xff\xfe\n", "is not UTF-8"),
    ],
)
def test_unreadable_csv_is_refused_naming_file_and_fix(posts, tmp_path, capsys, data, expected):
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    code = labels.main(
        ["--posts", str(posts), "--task", "chibi", "--csv", str(path), "--out", str(tmp_path / "o.parquet")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and expected in err[0] and "save it again as 'CSV UTF-8" in err[0], err
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(("value", "expected"), [("1.0", 1), ("0.0", 0), ("1.", 1), ("0", 0), ("2.0", None)])
def test_spreadsheet_numbers_as_labels(value, expected):
    assert labels.parse_label(value, "chibi") == expected
