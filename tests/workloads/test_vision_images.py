"""Real-image input: transforms, prepare (ImageFolder -> tar shards), the shard checks, the
DataLoader pipeline (worker-count independent, resumable, rank-disjoint), S3 streaming, and
evaluation that does not disturb training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workloads.common.cli import ConfigError
from workloads.common.dist import DistInfo
from workloads.vision.images import crop_box, decode, eval_transform, tar_index, train_transform
from workloads.vision.imagesets import ImageFolder, TarShards, open_images
from workloads.vision.loader import ImageLoader
from workloads.vision.prepare import build_shards


@pytest.fixture(autouse=True)
def _one_thread():
    """In-process training on the shared 2-core machine: one intra-op thread, as the
    subprocess runs use (OMP_NUM_THREADS=1); oversubscribed, a step takes 10x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tree(root: Path, classes=("cat", "dog", "eel"), per_class=12) -> Path:
    """An ImageFolder tree: JPEG, PNG, greyscale and palette images of odd sizes; pixel (0, 0)
    of every image encodes its class (red channel) for label checks after a crop."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = 40 + int(rng.integers(0, 30)), 36 + int(rng.integers(0, 30))
            x = np.full((h, w, 3), 51 * (c % 5 + 1), np.uint8)  # on the web palette
            img = Image.fromarray(x)
            if i % 4 == 1:
                img.save(root / name / f"{i}.png")
            elif i % 4 == 2:
                img.convert("L").save(root / name / f"{i}.jpg")
            elif i % 4 == 3:
                img.convert("P").save(root / name / f"{i}.png")
            else:
                img.save(root / name / f"{i}.jpeg", quality=95)
    return root


def test_random_resized_crop_stays_inside_and_within_the_scale():
    rng = np.random.default_rng(1)
    for _ in range(200):
        w, h = int(rng.integers(8, 400)), int(rng.integers(8, 400))
        left, top, right, bottom = crop_box(w, h, rng, (0.08, 1.0))
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
    areas = [((r - x0) * (b - t)) / (300 * 200)
             for x0, t, r, b in (crop_box(300, 200, rng, (0.25, 0.5)) for _ in range(200))]
    assert min(areas) > 0.2 and max(areas) < 0.56
    assert crop_box(1000, 10, rng, (0.9, 1.0)) == (493, 0, 506, 10)  # fallback: ratio 4/3


def test_transforms_are_a_function_of_the_generator():
    img = decode(_png(np.arange(64 * 48 * 3, dtype=np.uint32).reshape(48, 64, 3) % 251))
    a = train_transform(img, 32, np.random.default_rng([3, 0, 0, 5]), (0.08, 1.0), True)
    b = train_transform(img, 32, np.random.default_rng([3, 0, 0, 5]), (0.08, 1.0), True)
    c = train_transform(img, 32, np.random.default_rng([3, 0, 0, 6]), (0.08, 1.0), True)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    e = eval_transform(img, 32)
    assert e.shape == (32, 32, 3) and np.array_equal(e, eval_transform(img, 32))


def _png(x: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(x.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_prepare_shards_an_image_folder_with_a_stratified_val_split(tmp_path):
    src = _tree(tmp_path / "src")
    manifest = build_shards(src, tmp_path / "out", shard_size=10, val_fraction=0.25, seed=0)
    assert manifest["classes"] == ["cat", "dog", "eel"] and manifest["num_classes"] == 3
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert (train["count"], val["count"]) == (27, 9)
    assert [s["count"] for s in train["shards"]] == [10, 10, 7]
    assert manifest["image_sizes"]["min"][0] >= 40 and manifest["image_sizes"]["max"][0] < 70
    shards = open_images(str(tmp_path / "out"))
    assert isinstance(shards, TarShards) and shards.n == 27
    labels = []
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            for j, m in enumerate(tar_index(tmp_path / "out" / f"{split}-{i:06d}.tar")):
                data, label = shards.read((split, i, j))
                assert label == m.label
                red = np.asarray(decode(data))[0, 0, 0]
                assert abs(int(red) - 51 * (label + 1)) <= 3  # the image's class, decoded
                labels.append((split, label))
    assert sorted(lbl for s, lbl in labels if s == "val") == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_a_truncated_shard_is_refused_with_one_line(tmp_path, wl):
    build_shards(_tree(tmp_path / "src"), tmp_path / "out", 10, 0.25, 0)
    shard = tmp_path / "out" / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ConfigError, match="shard train-000001.tar is .* bytes, the manifest says"):
        open_images(str(tmp_path / "out"))
    proc = wl.run_module("workloads.vision.train", ["--data", str(tmp_path / "out"),
                                                    "--max-steps", "1"], tmp_path)
    wl.assert_config_error(proc, "--data", "train-000001.tar is")


def test_an_image_folder_and_a_bad_one(tmp_path):
    src = _tree(tmp_path / "flat")
    folder = open_images(str(src))
    assert isinstance(folder, ImageFolder) and folder.n == 36 and not folder.has_eval
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no class sub-directories"):
        open_images(str(tmp_path / "empty"))


def _loader(images, workers=0, rank=0, world=1, batch=4):
    return ImageLoader(images, batch, 16, DistInfo(rank=rank, world_size=world), seed=5,
                       workers=workers, prefetch=2, scale=(0.08, 1.0), hflip=True)


def test_batches_do_not_depend_on_the_worker_count_and_resume_exactly(tmp_path):
    build_shards(_tree(tmp_path / "src"), tmp_path / "out", 10, 0.25, 0)
    images = open_images(str(tmp_path / "out"))
    ref = _loader(images)
    batches = [ref.next_batch() for _ in range(16)]  # 27 // 4 = 6 steps/epoch: crosses two
    assert ref.state_dict() == {"epoch": 2, "batch": 4}
    two = _loader(images, workers=2)
    for x, y in batches:
        got_x, got_y = two.next_batch()
        assert torch.equal(got_x, x) and torch.equal(got_y, y)
    resumed = _loader(images, workers=2)
    resumed.load_state_dict({"epoch": 1, "batch": 3})
    for x, y in batches[9:]:
        got_x, got_y = resumed.next_batch()
        assert torch.equal(got_x, x) and torch.equal(got_y, y)
    for loader in (ref, two, resumed):
        loader.close()


def test_ranks_read_disjoint_shards_and_evaluate_the_split_once(tmp_path):
    src = _tree(tmp_path / "src", classes=tuple("abcdef"), per_class=10)
    build_shards(src, tmp_path / "out", 8, 0.2, 0)
    images = open_images(str(tmp_path / "out"))
    for epoch in range(2):
        orders = [images.train_order(epoch, r, 2, 4, seed=5) for r in range(2)]
        assert len(orders[0]) == len(orders[1]) == 4 * images.steps_per_epoch(epoch, 4, 2, 5)
        shards = [{ref[1] for ref in o} for o in orders]
        assert not shards[0] & shards[1]
        assert len(set(orders[0] + orders[1])) == len(orders[0]) + len(orders[1])
    evals = [images.eval_refs(r, 2) for r in range(2)]
    assert len(evals[0]) + len(evals[1]) == 12 and not set(evals[0]) & set(evals[1])
    with pytest.raises(ConfigError, match="no full step"):
        _loader(images, world=2, batch=64)


def test_s3_shards_stream_one_at_a_time(s3, tmp_path, monkeypatch):
    env, proxy, direct = s3
    build_shards(_tree(tmp_path / "src"), tmp_path / "out", 10, 0.25, 0)
    direct.create_bucket(Bucket="imgs")
    for f in (tmp_path / "out").iterdir():
        direct.upload_file(str(f), "imgs", f"sets/pets/{f.name}")
    monkeypatch.setenv("TRAINYARD_CACHE", str(tmp_path / "cache"))
    proxy.reset(every=3, max_failures=3)
    images = open_images("s3://imgs/sets/pets")
    cache = tmp_path / "cache" / "data" / "s3" / "imgs" / "sets" / "pets"
    assert not list(cache.glob("*.tar")) if cache.exists() else True  # nothing fetched yet
    loader = _loader(images, workers=1)
    x, y = loader.next_batch()
    assert x.shape == (4, 16, 16, 3)
    first = images.train_order(0, 0, 1, 4, 5)[0][1]
    assert (cache / images.shards["train"][first].name).is_file()
    assert len(list(cache.glob("*.tar"))) < 4  # 3 train + 1 val shards: not all of them
    loader.close()
    local = _loader(open_images(str(tmp_path / "out")))
    lx, ly = local.next_batch()
    assert torch.equal(lx, x) and torch.equal(ly, y)  # the same bytes as the local copy
    assert proxy.failures >= 1
    direct.put_object(Bucket="imgs", Key="sets/pets/val-000000.tar", Body=b"short")
    with pytest.raises(ConfigError, match="val-000000.tar is 5 bytes"):
        open_images("s3://imgs/sets/pets")


def test_evaluation_counts_the_whole_split_and_leaves_training_unchanged(tmp_path, monkeypatch):
    from workloads.common.dist import setup_distributed
    from workloads.vision.config import TrainConfig
    from workloads.vision.trainer import build, evaluate, train_step

    monkeypatch.setenv("TRAINYARD_CACHE", str(tmp_path / "cache"))
    info = setup_distributed("cpu")
    cfg = TrainConfig(max_steps=8, seed=2, workers=0)
    runs = []
    for with_eval in (False, True):
        b = build(cfg, info)
        losses, result = [], None
        for n in range(1, 7):
            losses.append(float(train_step(b, cfg, n, info)[0]))
            if with_eval and n % 3 == 0:
                result = evaluate(b, info)
        runs.append(losses)
    assert runs[0] == runs[1]
    assert result["eval_images"] == 512  # synthetic_counts(10)[1]: every held-out image once
    assert 0.0 <= result["eval_top1"] <= result["eval_top5"] <= 1.0
    assert result["eval_loss"] > 0


def test_train_logs_evaluations_to_metrics_and_tensorboard(tmp_path, wl):
    metrics, tb = tmp_path / "m.jsonl", tmp_path / "tb"
    proc = wl.run_module("workloads.vision.train", [
        "--max-steps", "12", "--eval-every", "5", "--workers", "1", "--metrics-file",
        str(metrics), "--tensorboard-dir", str(tb), "--log-every", "5"], tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    steps, events = wl.read_metrics(metrics)
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [5, 10, 12]
    assert all(0 <= e["eval_top1"] <= e["eval_top5"] <= 1 for e in evals)
    assert steps[7]["eval_step"] == 5 and steps[11]["eval_top1"] == evals[1]["eval_top1"]
    assert "top-1" in proc.stdout and "1 loader workers/rank" in proc.stdout
    assert list(tb.glob("events.out.tfevents.*"))
