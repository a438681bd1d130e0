"""`makd train --log`: every tracker gets every figure of metrics.jsonl; a failing one never stops training;
logging never changes a result; only rank 0 logs under torchrun."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from makd_cli.errors import MakdError
from makd_cli.train import TrainConfig, train
from makd_cli.train.loggers import LOGGERS, EpochLogger, check_logger_names, numeric_metrics, register_logger


def cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), student="small_cnn", epochs=2, batch_size=8, lr=0.05, quiet=True, val_fraction=0.25)
    base.update(kw)
    return TrainConfig(**base)


def metrics_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_registry_lists_every_tracker_and_each_has_a_help():
    assert {"tensorboard", "wandb", "trackio", "csv"} <= set(LOGGERS.names())
    for entry in LOGGERS.entries():
        assert entry.help and issubclass(entry.obj, EpochLogger)
    assert LOGGERS.get("wandb").extra == "wandb" and LOGGERS.get("trackio").extra == "trackio"  # optional extras


def test_unknown_tracker_is_one_line():
    with pytest.raises(MakdError, match="unknown logger"):
        check_logger_names(["tensorbored"])


def test_tensorboard_events_hold_every_metric(tiny_data, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    train(cfg(tiny_data, run, log=["tensorboard"], select_by="test-acc", val_fraction=0.25))
    records = metrics_of(run)
    assert list(run.glob("events.out.tfevents.*")), "the event file goes in the run folder"
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for rec in records:
        for key, value in numeric_metrics(rec).items():
            assert key in tags, key
            logged = {e.step: e.value for e in acc.Scalars(key)}
            assert logged[rec["epoch"]] == pytest.approx(value, rel=1e-6, abs=1e-6)
    assert {"train_loss", "train_ce", "lr", "val_top1", "test_top1", "test_loss", "images_per_s"} <= tags
    assert "config" in "".join(acc.Tags()["tensors"])  # the resolved config, as text


@pytest.mark.parametrize("name", [n for n in LOGGERS.names()])
def test_every_tracker_gets_every_epoch(tiny_data, tmp_path, monkeypatch, name):
    """Each registered tracker, as a recorder: the records it receives are metrics.jsonl's, one per epoch."""
    cls = LOGGERS.get(name)
    got = []
    monkeypatch.setattr(cls, "__init__", lambda self, ctx: setattr(self, "ctx", ctx))
    monkeypatch.setattr(cls, "log_epoch", lambda self, record, history: got.append((self.ctx, record)))
    monkeypatch.setattr(cls, "close", lambda self: got.append("closed"))
    monkeypatch.setattr(cls, "requires", None)
    run = tmp_path / "multi" / "seed3"
    train(cfg(tiny_data, run, log=[name], seed=3))
    assert [r for _, r in got[:-1]] == metrics_of(run) and got[-1] == "closed"
    ctx = got[0][0]
    assert ctx.group == "multi" and ctx.run_name == "multi/seed3" and ctx.hparams["seed"] == 3
    assert ctx.hparams["milestones"] and ctx.config["split"]["train"] > 0  # resolved, not the defaults' None


def test_csv_tracker(tiny_data, tmp_path):
    run = tmp_path / "csv"
    train(cfg(tiny_data, run, log=["csv"], epochs=3))
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["epoch", "lr"] and len(rows) == 4


def test_logging_never_changes_a_result(tiny_data, tmp_path):
    """A tracker that draws from every random stream: the same weights and figures as without it."""

    @register_logger("greedy-test", help="draws random numbers")
    class Greedy(EpochLogger):
        def __init__(self, ctx):
            super().__init__(ctx)
            torch.rand(100), __import__("random").random(), __import__("numpy").random.rand(5)

        def log_epoch(self, record, history):
            torch.rand(100), __import__("random").random(), __import__("numpy").random.rand(5)

    try:
        train(cfg(tiny_data, tmp_path / "plain", epochs=2))
        train(cfg(tiny_data, tmp_path / "logged", epochs=2, log=["greedy-test", "csv"]))
    finally:
        LOGGERS.unregister("greedy-test")
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True) for r in ("plain", "logged"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    drop = ("seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in metrics_of(tmp_path / "plain")] == \
           [{k: v for k, v in r.items() if k not in drop} for r in metrics_of(tmp_path / "logged")]


def test_a_failing_tracker_warns_once_and_training_goes_on(tiny_data, tmp_path, capsys):
    @register_logger("broken-test", help="raises on every epoch")
    class Broken(EpochLogger):
        def log_epoch(self, record, history):
            raise OSError(28, "No space left on device")

    @register_logger("unstartable-test", help="raises when opened")
    class Unstartable(EpochLogger):
        def __init__(self, ctx):
            raise ConnectionError("no network")

    try:
        result = train(cfg(tiny_data, tmp_path / "run", epochs=3, log=["broken-test", "unstartable-test", "csv"]))
    finally:
        LOGGERS.unregister("broken-test")
        LOGGERS.unregister("unstartable-test")
    assert len(result["history"]) == 3 and (tmp_path / "run" / "best.pt").exists()
    err = capsys.readouterr().err
    assert err.count("--log broken-test failed") == 1 and "No space left on device" in err
    assert err.count("--log unstartable-test could not start") == 1
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 4  # the others go on


def _train_cli(args, env_extra, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.run([sys.executable, "-m", "makd_cli", "train", *args, "--student", "small_cnn", "--epochs", "2",
                           "--batch-size", "8", "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_wandb_offline_writes_its_run_files(tiny_data, tmp_path):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'makd[wandb]')")
    run = tmp_path / "runs" / "wb"
    proc = _train_cli(["--data", str(tiny_data), "-o", str(run), "--log", "wandb", "--json"],
                      {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": "", "HOME": str(tmp_path)}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    json.loads(proc.stdout)  # the tracker's own output stays off stdout
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((run / "wandb").iterdir())
    stream = next(runs[0].glob("*.wandb")).read_bytes()  # wandb's record stream, which `wandb sync` uploads
    for key in numeric_metrics(metrics_of(run)[-1]):
        assert key.encode() in stream, key


def test_trackio_local_writes_its_database(tiny_data, tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed (pip install 'makd[trackio]')")
    store = tmp_path / "trackio"
    run = tmp_path / "runs" / "tk"
    proc = _train_cli(["--data", str(tiny_data), "-o", str(run), "--log", "trackio", "--json"],
                      {"TRACKIO_DIR": str(store), "TRACKIO_PROJECT": "makd-test", "HOME": str(tmp_path)}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    json.loads(proc.stdout)
    dbs = list(store.rglob("*.db"))
    assert dbs, list(store.rglob("*"))
    import sqlite3

    with sqlite3.connect(dbs[0]) as db:
        text = json.dumps(db.execute("SELECT * FROM metrics").fetchall(), default=str)
    assert "train_loss" in text and "val_top1" in text and "tk" in text


def test_missing_extra_is_one_line(tiny_data, tmp_path, monkeypatch):
    from makd_cli.train.loggers import TensorBoardLogger, WandbLogger

    monkeypatch.setattr(WandbLogger, "requires", "makd_no_such_module")
    with pytest.raises(MakdError, match=r"--log wandb needs the makd_no_such_module package: pip install 'makd\[wandb\]'"):
        check_logger_names(["wandb"])
    monkeypatch.setattr(TensorBoardLogger, "requires", "makd_no_such_module")
    with pytest.raises(MakdError, match="--log tensorboard needs the makd_no_such_module package: pip install makd_no_such_module"):
        check_logger_names(["tensorboard"])


@pytest.mark.slow
def test_only_rank_zero_logs_under_torchrun(tiny_data, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists() or shutil.which("torchrun")
    run = tmp_path / "run"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "makd_cli", "train", "--data", str(tiny_data),
           "--student", "small_cnn", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "-o", str(run), "--quiet",
           "--tracker", "csv", "--tracker", "tensorboard"]  # torchrun's parser takes --log for its --log-dir
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    assert "failed" not in proc.stderr


def test_cli_unknown_tracker_is_one_line_exit_2(tiny_data, tmp_path, capsys):
    from makd_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tiny_data), "-o", str(tmp_path / "r"), "--log", "nope", "--epochs", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "unknown logger (--log) 'nope'; choose one of: csv, tensorboard, trackio, wandb" in " ".join(err.split())
    assert not (tmp_path / "r").exists()  # checked before anything trains
