"""CheckpointStore in one process: completeness, fallback, retention, S3 with transient errors."""

from __future__ import annotations

import json

import pytest
import torch

from workloads.common.checkpoint import CheckpointStore, step_name
from workloads.common.dist import DistInfo


def _state(v: float) -> dict:
    return {"w": torch.full((64, 64), v), "b": torch.arange(10.0) * v, "step": int(v)}


def _load(store: CheckpointStore) -> tuple[int | None, dict]:
    target = _state(0.0)
    step = store.load(target, log=lambda *_: None)
    return step, target


def _save_steps(store: CheckpointStore, steps) -> None:
    for s in steps:
        store.save(_state(float(s)), s)


def test_round_trip_and_latest_marker(tmp_path):
    store = CheckpointStore(str(tmp_path), DistInfo(), keep_last=10)
    assert _load(store)[0] is None  # nothing to resume
    _save_steps(store, [2, 4])
    assert (tmp_path / "latest").read_text() == step_name(4)
    manifest = json.loads((tmp_path / step_name(4) / "MANIFEST.json").read_text())
    assert ".metadata" in manifest["files"] and manifest["step"] == 4
    step, target = _load(store)
    assert step == 4 and target["step"] == 4
    assert torch.equal(target["w"], torch.full((64, 64), 4.0))


def test_truncated_checkpoint_falls_back(tmp_path):
    store = CheckpointStore(str(tmp_path), DistInfo(), keep_last=10)
    _save_steps(store, [2, 4])
    shard = next((tmp_path / step_name(4)).glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    logs = []
    step = CheckpointStore(str(tmp_path), DistInfo()).load(_state(0.0), log=logs.append)
    assert step == 2
    assert any("truncated" in line and step_name(4) in line for line in logs)


def test_half_written_and_missing_files_are_skipped(tmp_path):
    store = CheckpointStore(str(tmp_path), DistInfo(), keep_last=10)
    _save_steps(store, [2, 4, 6])
    (tmp_path / step_name(6) / "MANIFEST.json").unlink()  # crash before the manifest
    next((tmp_path / step_name(4)).glob("*.distcp")).unlink()  # a file went missing
    (tmp_path / step_name(8)).mkdir()  # newer than the marker: never considered
    assert store.check(6) == "no manifest (half-written)"
    assert "missing" in store.check(4)
    assert _load(store)[0] == 2


def test_corrupt_manifest_and_marker(tmp_path):
    store = CheckpointStore(str(tmp_path), DistInfo(), keep_last=10)
    _save_steps(store, [2, 4])
    (tmp_path / step_name(4) / "MANIFEST.json").write_text("{not json")
    assert store.check(4) == "unreadable manifest"
    (tmp_path / "latest").write_text("garbage")  # unreadable marker: scan everything
    assert _load(store)[0] == 2


def test_keep_last_deletes_only_after_newer_complete(tmp_path):
    store = CheckpointStore(str(tmp_path), DistInfo(), keep_last=2)
    _save_steps(store, [1, 2, 3, 4])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [step_name(3), step_name(4)]
    # A half-written newer checkpoint does not push out a complete one.
    (tmp_path / step_name(5)).mkdir()
    store._retain()
    assert (tmp_path / step_name(3)).is_dir() and (tmp_path / step_name(4)).is_dir()


def test_resave_same_step_replaces_leftovers(tmp_path):
    store = CheckpointStore(str(tmp_path), DistInfo(), keep_last=10)
    (tmp_path / step_name(2)).mkdir()
    (tmp_path / step_name(2) / "__7_0.distcp").write_bytes(b"stale")
    _save_steps(store, [2])
    assert not (tmp_path / step_name(2) / "__7_0.distcp").exists()
    assert store.check(2) is None


def test_s3_round_trip_with_transient_errors(s3, tmp_path, monkeypatch):
    env, proxy, direct = s3
    monkeypatch.setenv("TRAINYARD_CACHE", str(tmp_path / "cache"))
    direct.create_bucket(Bucket="ckpt")
    proxy.reset(every=3, max_failures=6)
    store = CheckpointStore("s3://ckpt/runs/a", DistInfo(), keep_last=2)
    _save_steps(store, [1, 2, 3])
    step, target = _load(store)
    assert proxy.failures == 6, "the proxy should have injected every planned failure"
    assert step == 3 and torch.equal(target["w"], torch.full((64, 64), 3.0))
    # Nothing lost: every file in the manifest is in the bucket with its size; retention ran.
    objs = {o["Key"]: o["Size"] for o in direct.list_objects_v2(Bucket="ckpt")["Contents"]}
    manifest = json.loads(direct.get_object(Bucket="ckpt", Key="runs/a/step-00000003/MANIFEST.json")
                          ["Body"].read())
    for name, size in manifest["files"].items():
        assert objs[f"runs/a/step-00000003/{name}"] == size
    assert direct.get_object(Bucket="ckpt", Key="runs/a/latest")["Body"].read() == b"step-00000003"
    assert not any(k.startswith("runs/a/step-00000001/") for k in objs)
    # A partial upload of a newer step (no manifest) is skipped.
    direct.put_object(Bucket="ckpt", Key="runs/a/step-00000004/__0_0.distcp", Body=b"partial")
    direct.put_object(Bucket="ckpt", Key="runs/a/latest", Body=b"step-00000004")
    assert _load(store)[0] == 3


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://Bad_Bucket/x"])
def test_s3_url_without_bucket_is_rejected(url):
    from workloads.common.cli import ConfigError

    with pytest.raises(ConfigError, match="--checkpoint-dir"):
        CheckpointStore(url, DistInfo())


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_async_save_commits_only_when_finalized(tmp_path):
    store = CheckpointStore(str(tmp_path), DistInfo(), keep_last=10, use_async=True)
    _save_steps(store, [2])
    state = _state(4.0)
    store.save(state, 4)  # finalizes step 2 first, then starts step 4 in the background
    state["w"].fill_(99.0)  # training goes on mutating the live tensors
    assert (tmp_path / "latest").read_text() == step_name(2)
    while not store.ready():
        pass
    assert store.finalize() == 4
    store.close()
    step, target = _load(store)
    assert step == 4 and torch.equal(target["w"], torch.full((64, 64), 4.0))  # the snapshot
