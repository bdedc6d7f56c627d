"""skin_core.storage: the same calls on a local folder and on S3 (moto's server on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skin_core import storage


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty root folder: a local path or ``s3://<bucket>``."""
    return str(tmp_path / "root") if request.param == "local" else request.getfixturevalue("s3_bucket")


def test_write_read_exists(root: str) -> None:
    uri = storage.join(root, "a", "b.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"first")
    storage.write_bytes(uri, b"second")  # overwrite
    assert storage.exists(uri) and storage.read_bytes(uri) == b"second"
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        storage.read_bytes(storage.join(root, "missing.bin"))


def test_read_csv_keeps_empty_fields_empty(root: str) -> None:
    uri = storage.join(root, "t.csv")
    storage.write_bytes(uri, b"image,lesion_id\nx,\ny,L1\n")
    assert storage.read_csv(uri)["lesion_id"].tolist() == ["", "L1"]
    assert storage.read_csv(uri, keep_default_na=True)["lesion_id"].isna().tolist() == [True, False]


def test_listing_names_tree_and_folders(root: str) -> None:
    for name in ("top.txt", "f1/a.txt", "f1/deep/b.txt", "f2/c.txt"):
        storage.write_bytes(storage.join(root, name), name.encode())
    assert storage.list_names(root) == ["top.txt"]
    assert storage.list_names(storage.join(root, "f1")) == ["a.txt"]
    assert storage.list_tree(root) == ["f1/a.txt", "f1/deep/b.txt", "f2/c.txt", "top.txt"]
    assert storage.list_folders(root) == ["f1", "f2"]
    assert storage.list_tree(storage.join(root, "absent")) == [] == storage.list_names(storage.join(root, "absent"))


def test_delete_prefix_removes_one_folder_only(root: str) -> None:
    for name in ("keep/a.txt", "drop/a.txt", "drop/sub/b.txt", "dropped-not/c.txt"):
        storage.write_bytes(storage.join(root, name), b"x")
    storage.delete_prefix(storage.join(root, "drop"))
    assert storage.list_tree(root) == ["dropped-not/c.txt", "keep/a.txt"]  # a shared name prefix is not a folder
    storage.delete_prefix(storage.join(root, "never-there"))  # absent is fine


def test_upload_tree_copies_everything_and_writes_last_names_last(root: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "src"
    for name in ("a.txt", "z/b.txt", "DONE.csv", "m.txt"):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_text(name)
    written = []
    real_write = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda uri, data: (written.append(uri), real_write(uri, data)))
    storage.upload_tree(local, storage.join(root, "copy"), last=("DONE.csv",))
    assert storage.list_tree(storage.join(root, "copy")) == ["DONE.csv", "a.txt", "m.txt", "z/b.txt"]
    assert storage.read_bytes(storage.join(root, "copy", "z", "b.txt")) == b"z/b.txt"
    assert written[-1] == storage.join(root, "copy", "DONE.csv")  # the "complete" file goes after the rest


def test_local_writes_are_atomic_and_readable_by_others(tmp_path: Path) -> None:
    uri = str(tmp_path / "x" / "out.bin")
    storage.write_bytes(uri, b"data")
    assert list((tmp_path / "x").iterdir()) == [Path(uri)]  # no temporary file left behind
    assert Path(uri).stat().st_mode & 0o777 == 0o644


def test_uri_helpers() -> None:
    assert storage.split_s3("s3://bucket/a/b") == ("bucket", "a/b")
    with pytest.raises(ValueError, match="bucket"):
        storage.split_s3("s3:///key")
    assert storage.join("s3://b/p/", "/x/", "y") == "s3://b/p/x/y"
    assert storage.absolute("s3://b/k") == "s3://b/k" and storage.absolute("rel") == str(Path("rel").resolve())
