"""Issue 19: the writer (permissions, full disk, leftovers, lock), the readers (text, targets,
checkpoints, resume folders, --pretrained), unreadable images, best.pt without validation, and
makd eval's grouping and prediction cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CLASSES, class_mcq_targets, make_imagefolder
from makd_cli.errors import MakdError
from makd_cli.fileio import atomic_write_text, clean_stale_temporaries, output_lock, read_text
from makd_cli.formats.questions import read_classes
from makd_cli.formats.targets import read_targets, write_targets


# ---- the writer --------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_permissions_of_a_normal_write(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_targets(tmp_path / "t.h5", class_mcq_targets())
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    want = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == want
    assert (tmp_path / "t.h5").stat().st_mode & 0o777 == want


def test_rewrite_keeps_the_files_mode(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "1")
    p.chmod(0o640)
    atomic_write_text(p, "2")
    assert p.stat().st_mode & 0o777 == 0o640 and p.read_text() == "2"


def test_disk_full_is_one_line_and_keeps_the_earlier_output(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "t.h5"
    target.write_bytes(b"EARLIER")
    real_open = open

    class FullFile:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return FullFile(fh) if "w" in mode and ".tmp" in str(file) else fh

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(MakdError, match="disk is full.*untouched"):
        write_targets(target, class_mcq_targets())
    monkeypatch.undo()
    assert target.read_bytes() == b"EARLIER"
    assert not list(tmp_path.glob(".*.tmp"))


def _tmpfs(path: Path, size: str = "2m") -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def test_full_tmpfs_extract_exits_2(tmp_path, classes_file, questions_file):
    """Item 1 as reported: a real full file system (needs root to mount a 2 MB tmpfs)."""
    full = tmp_path / "full"
    if not _tmpfs(full):
        pytest.skip("needs root to mount a tmpfs")
    try:
        with open(full / "fill", "wb") as fh:
            try:
                fh.write(b"\0" * (3 << 20))
            except OSError:
                pass
        proc = subprocess.run([sys.executable, "-m", "makd_cli", "extract", "--teacher", "random", "--questions", questions_file,
                               "--classes", classes_file, "-o", full / "t.h5"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert "disk is full" in proc.stderr
        assert sorted(p.name for p in full.iterdir()) == ["fill"]
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    out = tmp_path / "t.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    host = socket.gethostname().replace(".", "_").replace("-", "_")
    stale = tmp_path / f".t.h5.{host}-{dead.pid}.abc123.h5.tmp"
    stale.write_bytes(b"")
    alive = tmp_path / f".t.h5.{host}-{os.getpid()}.def456.h5.tmp"
    alive.write_bytes(b"")
    old_style = tmp_path / ".t.h5.q1w2e3r4.h5.tmp"  # an older makd's name: removed once it is old
    old_style.write_bytes(b"")
    os.utime(old_style, (time.time() - 3600, time.time() - 3600))
    other = tmp_path / ".other.h5.x.tmp"
    other.write_bytes(b"")
    write_targets(out, class_mcq_targets())
    assert not stale.exists() and not old_style.exists()
    assert alive.exists() and other.exists()
    assert clean_stale_temporaries(out) == 0


def test_kill_9_during_write_leaves_nothing_after_the_next_run(tmp_path, classes_file, questions_file):
    out = tmp_path / "t.h5"
    code = ("import os, signal\nfrom makd_cli.fileio import atomic_path\n"
            f"with atomic_path({str(out)!r}, suffix='.h5') as tmp:\n    tmp.write_bytes(b'half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], timeout=120)
    assert list(tmp_path.glob(".t.h5.*.tmp")), "the killed writer left its temporary"
    proc = subprocess.run([sys.executable, "-m", "makd_cli", "extract", "--teacher", "random", "--questions", questions_file,
                           "--classes", classes_file, "-o", out], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.glob(".t.h5.*")), list(tmp_path.iterdir())


def test_second_job_on_the_same_output_names_the_holder(tmp_path):
    out = tmp_path / "t.h5"
    with output_lock(out):
        code = f"from makd_cli.fileio import output_lock\nwith output_lock({str(out)!r}):\n    pass\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert "being written by another makd job" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert not list(tmp_path.iterdir())  # the lock file goes with the lock
    with output_lock(out):  # free again
        pass


def test_concurrent_extract_refuses(tmp_path, classes_file, questions_file):
    from makd_cli.extract.run import run_extract

    out = tmp_path / "t.h5"
    with output_lock(out, "targets file"):
        with pytest.raises(MakdError, match="another makd job"):
            run_extract(output=out, questions=questions_file, classes=classes_file, data=None, llm=None, mllm=None, clip=None,
                        teacher="random", backend="llama.cpp", prompt_layout="paper", labels="digits", temperature=1.0,
                        restart=False, seed=0, threads=None, progress=False)


# ---- the readers -------------------------------------------------------------------------------
def test_bom_is_dropped_from_the_first_class(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes("\ufeff".encode() + "\n".join(CLASSES).encode())
    assert read_classes(p) == CLASSES


@pytest.mark.parametrize("data, fragment", [(b"\xff\xfe\x00b", "binary"), (b"caf\xe9", "not UTF-8"), ("gr\u00fc".encode()[:-1], "not UTF-8")])
def test_text_that_is_not_utf8(tmp_path, data, fragment):
    p = tmp_path / "c.txt"
    p.write_bytes(data)
    with pytest.raises(MakdError, match=fragment):
        read_text(p, "class list")


def test_resume_folder_damage_names_the_file_and_restart(tmp_path):
    from makd_cli.extract.resume import ResumeStore

    store = ResumeStore(tmp_path / "t.h5", {"a": 1})
    store.save("class00000", logits=np.zeros((3, 4)))
    unit = store.dir / "unit-class00000.npz"
    for content in (b"", b"PK\x03\x04 not a zip"):
        unit.write_bytes(content)
        with pytest.raises(MakdError, match=r"unit-class00000.npz is damaged.*--restart"):
            store.load("class00000")
    store.save("class00000", logits=np.zeros((2, 4)))
    with pytest.raises(MakdError, match="shape"):
        store.load_checked("class00000", logits=(3, 4))
    (store.dir / "fingerprint.json").write_text("{oops")
    with pytest.raises(MakdError, match=r"fingerprint.json is damaged.*--restart"):
        ResumeStore(tmp_path / "t.h5", {"a": 1})
    ResumeStore(tmp_path / "t.h5", {"a": 1}, restart=True)  # --restart discards it


def test_targets_from_an_older_writer_still_read(tmp_path, mcq_targets_file):
    t = read_targets(mcq_targets_file)
    assert t.kind == "class_mcq" and t.classes == CLASSES


# ---- training and evaluation -------------------------------------------------------------------
def _train(data, out, **kw):
    from makd_cli.train import TrainConfig, train

    base = dict(data=str(data), out=str(out), student="small_cnn", epochs=1, batch_size=8, lr=0.05, quiet=True, val_fraction=0.0)
    base.update(kw)
    return train(TrainConfig(**base))


def test_best_pt_without_validation_when_the_loss_exceeds_1(tiny_data, tmp_path):
    result = _train(tiny_data, tmp_path / "run", lr=0.0)  # lr 0: the loss stays about log 3 > 1
    assert result["history"][0]["train_loss"] > 1
    assert (tmp_path / "run" / "best.pt").exists()


def test_one_unreadable_image_is_skipped_and_reported(tmp_path, capfd):
    data = make_imagefolder(tmp_path / "d", per_class_train=40, per_class_test=2)
    (data / "train" / CLASSES[0] / "zz.jpg").write_bytes(b"")  # 1 of 121 training images
    result = _train(data, tmp_path / "run")
    assert result["unreadable_images"]["count"] == 1 and result["unreadable_images"]["first"].endswith("zz.jpg")
    assert "skipped 1 unreadable image" in capfd.readouterr().err


def test_eval_skips_an_unreadable_test_image(tiny_data, tmp_path):
    from makd_cli.evaluate.report import evaluate_checkpoint

    _train(tiny_data, tmp_path / "run")
    big = make_imagefolder(tmp_path / "d", per_class_train=2, per_class_test=40)
    (big / "test" / CLASSES[1] / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    r = evaluate_checkpoint(str(tmp_path / "run" / "best.pt"), str(big), device="cpu", cache=False)
    assert r["unreadable_images"]["count"] == 1 and sum(r["confusion"][i][j] for i in range(3) for j in range(3)) == 120


def test_decompression_bomb_counts_as_unreadable(tmp_path):
    from PIL import Image

    from makd_cli.data.base import Split, file_loader
    from makd_cli.data.transforms import TorchSplit

    p = tmp_path / "big.png"
    Image.new("L", (20000, 20000)).save(p)  # 400 M pixels: PIL refuses to decode it
    split = Split(["big.png"], [0], file_loader([p]))
    data = TorchSplit(split, lambda im: im, skip_unreadable=True)
    assert data[0] is None and data.unreadable.count() == 1


def test_pretrained_accepts_makds_own_checkpoint(tiny_data, tmp_path):
    _train(tiny_data, tmp_path / "a")
    _train(tiny_data, tmp_path / "b", pretrained=str(tmp_path / "a" / "best.pt"), lr=0.0, epochs=1)
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["model"]
    conv = next(k for k in a if k.startswith("backbone.") and k.endswith("weight"))
    assert torch.equal(a[conv], b[conv])  # lr 0 and momentum: the backbone is the loaded one


def test_eval_groups_by_every_differing_setting_and_shows_it(tiny_data, tmp_path):
    from makd_cli.evaluate.report import comparison_table, evaluate_checkpoint

    for seed in (0, 1):
        _train(tiny_data, tmp_path / f"lr05-{seed}", seed=seed)
    _train(tiny_data, tmp_path / "lr01", lr=0.01)
    results = [evaluate_checkpoint(str(tmp_path / n / "best.pt"), device="cpu") for n in ("lr05-0", "lr05-1", "lr01")]
    table = comparison_table(results)
    assert len(table) == 2 and sorted(table["runs"]) == [1, 2]
    assert table.attrs["differ"] == ["lr"] and set(table["lr"]) == {"0.05", "0.01"}


def test_eval_reuses_cached_predictions(tiny_data, tmp_path, monkeypatch):
    from makd_cli.evaluate import report

    _train(tiny_data, tmp_path / "run")
    first = report.evaluate_checkpoint(str(tmp_path / "run" / "best.pt"), device="cpu")
    assert list((tmp_path / "run").glob(".eval-best-test-*.npz"))
    monkeypatch.setattr(report, "student_from_checkpoint", lambda ckpt: pytest.fail("the network ran again"))
    second = report.evaluate_checkpoint(str(tmp_path / "run" / "best.pt"), device="cpu")
    assert second["top1"] == first["top1"] and second["confusion"] == first["confusion"]
    make_imagefolder(tmp_path / "other", per_class_train=12, per_class_test=5, seed=3)
    monkeypatch.undo()
    third = report.evaluate_checkpoint(str(tmp_path / "run" / "best.pt"), str(tmp_path / "other"), device="cpu")
    assert sum(map(sum, third["confusion"])) == 15  # another dataset: a new key, computed again


def test_read_only_folder_is_one_line(tmp_path, classes_file, questions_file, tiny_data):
    """Item 7: a read-only folder (a read-only tmpfs, since root may write anywhere else)."""
    ro = tmp_path / "ro"
    if not _tmpfs(ro, "1m"):
        pytest.skip("needs root to mount a tmpfs")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True, capture_output=True)
        for args in (["extract", "--teacher", "random", "--questions", questions_file, "--classes", classes_file, "-o", ro / "t.h5"],
                     ["data", "classes", tiny_data, "-o", ro / "c.txt"]):
            proc = subprocess.run([sys.executable, "-m", "makd_cli", *map(str, args)], capture_output=True, text=True, timeout=300)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1 and "cannot write" in proc.stderr, proc.stderr
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_lead_ssl_views_skip_an_unreadable_image(tmp_path):
    from makd_cli.data.base import Split, file_loader
    from makd_cli.train.moco import TwoViews

    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    make_imagefolder(tmp_path / "d", per_class_train=1, per_class_test=1)
    good.write_bytes((tmp_path / "d" / "train" / CLASSES[0] / "000.png").read_bytes())
    bad.write_bytes(b"not an image")
    views = TwoViews(Split(["bad.jpg", "good.png"], [0, 1], file_loader([bad, good])), lambda im: im.size)
    v1, v2, j = views[0]
    assert j == 1 and v1 == v2 == (16, 16) and views.unreadable.count() == 1
