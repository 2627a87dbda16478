"""Vision pieces in-process: config, FLOPs count, model, data sources, schedule, determinism,
fp16 loss-scaler checkpoints, shards from S3."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from workloads.common.cli import ConfigError
from workloads.common.dist import DistInfo, setup_distributed
from workloads.common.metrics import MetricsLogger
from workloads.vision.config import PRESETS, ModelConfig, TrainConfig, check_manifest
from workloads.vision.data import ShardLoader, SyntheticImages, resolve_data, to_input, write_shards
from workloads.vision.model import ResNet
from workloads.vision.parallel import lr_at


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """In-process builds write the synthetic JPEG set here once, not into ~/.cache, and use one
    intra-op thread (oversubscribed, a step takes 10x longer on the shared cores)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRAINYARD_CACHE", str(tmp_path_factory.mktemp("vision-cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess runs (OMP_NUM_THREADS=1): 2 shared cores
    yield
    torch.set_num_threads(threads)
    mp.undo()


def _hook_macs(cfg: ModelConfig) -> int:
    """MACs counted from the real module graph on the meta device (conv + linear)."""
    with torch.device("meta"):
        model = ResNet(cfg)
        x = torch.empty(1, 3, cfg.image_size, cfg.image_size)
    total = [0]

    def hook(mod, _inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total[0] += mod.in_channels * mod.out_channels * k * out.shape[2] * out.shape[3]
        elif isinstance(mod, torch.nn.Linear):
            total[0] += mod.in_features * mod.out_features

    for m in model.modules():
        m.register_forward_hook(hook)
    model(x)
    return total[0]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_flops_formula_matches_the_model(preset):
    cfg = PRESETS[preset].model
    assert cfg.forward_macs() == _hook_macs(cfg)


def test_resnet50_is_the_published_shape():
    cfg = PRESETS["resnet50"].model
    with torch.device("meta"):
        assert ResNet(cfg).num_params() == 25_557_032  # ResNet-50 v1.5
    assert cfg.forward_macs() == pytest.approx(4.09e9, rel=0.005)  # "4.1 GFLOPs" = GMACs
    assert cfg.train_flops_per_image() == 6 * cfg.forward_macs()


def test_config_validation_names_the_flag():
    for kwargs, flag in [({"preset": "x"}, "--preset"), ({"max_steps": 0}, "--max-steps"),
                         ({"momentum": 1.0}, "--momentum"), ({"device": "tpu"}, "--device"),
                         ({"checkpoint_dir": "s3://"}, "--checkpoint-dir")]:
        with pytest.raises(ConfigError) as e:
            TrainConfig(**kwargs)
        assert e.value.flag == flag
    with pytest.raises(ConfigError, match="block"):
        ModelConfig(block="dense", layers=(1,), width=8, stem="small", num_classes=2,
                    image_size=8)


def test_lr_scales_with_global_batch_warms_up_and_decays_to_the_floor():
    cfg = TrainConfig(preset="resnet50", max_steps=100, warmup_steps=10, lr=0.1)
    assert cfg.peak_lr(8) == pytest.approx(0.1 * 8 * 256 / 256)
    lrs = [lr_at(s, cfg, 8) for s in range(1, 101)]
    assert lrs[0] == pytest.approx(0.08) and lrs[9] == pytest.approx(0.8)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] == 0.0
    assert TrainConfig(max_steps=20).warmup == 2  # preset warm-up capped at max_steps // 10


def test_to_input_is_normalised_nchw_and_channels_last_without_a_copy():
    images = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    x = to_input(images, torch.device("cpu"), channels_last=True)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert to_input(images, torch.device("cpu"), channels_last=False).is_contiguous()


def test_synthetic_images_are_a_function_of_seed_step_and_rank():
    def make(rank=0, seed=1):
        return SyntheticImages(10, 32, 8, DistInfo(rank=rank, world_size=2), seed,
                               torch.device("cpu"))

    a, b = make(), make()
    xa, ya = a.next_batch()
    xb, yb = b.next_batch()
    assert xa.dtype == torch.uint8 and xa.shape == (8, 32, 32, 3)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(make(rank=1).next_batch()[0], xa)
    b.load_state_dict({"step": 5})
    for _ in range(4):
        a.next_batch()
    assert torch.equal(a.next_batch()[0], b.next_batch()[0])


def test_shard_loader_is_resumable_rank_disjoint_and_flips_deterministically(tmp_path):
    n = 100
    images = np.repeat(np.arange(1, n + 1, dtype=np.uint8), 8 * 8 * 3).reshape(n, 8, 8, 3)
    images[:, :, 0] = 255  # the left column marks the orientation; the rest is the image id
    write_shards(tmp_path, images, np.arange(n) % 7, 7, shard_size=30)

    def make(rank=0, hflip=True):
        return ShardLoader(tmp_path, 5, DistInfo(rank=rank, world_size=2), seed=3, hflip=hflip)

    a = make()
    for _ in range(12):  # 100 // 10 steps per epoch: crosses into epoch 1
        a.next_batch()
    assert a.state_dict() == {"epoch": 1, "cursor": 20}
    b = make()
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        (xa, ya), (xb, yb) = a.next_batch(), b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    r0, r1, seen = make(0), make(1), []
    for _ in range(10):  # one epoch: every image exactly once, on one rank
        for x, y in (r0.next_batch(), r1.next_batch()):
            ids = x[:, 0, 3, 0].long() - 1
            assert torch.equal(y, ids % 7)
            seen += ids.tolist()
    assert sorted(seen) == list(range(n))
    flipped = [bool(x[0, 7, 0] == 255) for x in make().next_batch()[0]]
    assert flipped == [bool(x[0, 7, 0] == 255) for x in make().next_batch()[0]]
    assert any(flipped) and not all(flipped)
    assert (make(hflip=False).next_batch()[0][:, :, 0] == 255).all()


def test_manifest_checks_name_data(tmp_path):
    write_shards(tmp_path, np.zeros((2, 16, 16, 3), np.uint8), np.zeros(2), 20)
    assert check_manifest(tmp_path, 16, 20)["total"] == 2
    with pytest.raises(ConfigError, match="16x16 images"):
        check_manifest(tmp_path, 32, 20)
    with pytest.raises(ConfigError, match="20 classes, the model 10"):
        check_manifest(tmp_path, 16, 10)
    with pytest.raises(ConfigError, match="no readable manifest"):
        check_manifest(tmp_path.parent, 16, 10)


def _steps(b, cfg, info, start, n):
    from workloads.vision.trainer import train_step

    return [float(train_step(b, cfg, s, info)[0]) for s in range(start, start + n)]


def test_same_seed_is_bit_for_bit_identical_on_cpu():
    from workloads.vision.trainer import build

    info = setup_distributed("cpu")
    cfg = TrainConfig(max_steps=20, seed=11)
    runs = []
    for _ in range(2):
        b = build(cfg, info)
        runs.append((_steps(b, cfg, info, 1, 6), [p.detach().clone() for p in b.model.parameters()],
                     [x.clone() for x in b.model.buffers()]))
    (la, pa, ba), (lb, pb, bb) = runs
    assert la == lb
    assert all(torch.equal(x, y) for x, y in zip(pa + ba, pb + bb, strict=True))
    other = build(TrainConfig(max_steps=20, seed=12), info)
    assert _steps(other, cfg, info, 1, 6) != la


def test_fp16_loss_scaler_survives_a_checkpoint_exactly(tmp_path):
    """fp16 autocast + GradScaler (CPU autocast supports fp16): the scale and its growth
    tracker are saved and restored, and the resumed run continues with identical losses."""
    from workloads.common.checkpoint import CheckpointStore
    from workloads.vision.trainer import TrainState, build

    info = setup_distributed("cpu")
    cfg = TrainConfig(max_steps=10, seed=4, precision="fp16", batch_size=4)
    b = build(cfg, info)
    assert b.scaler.is_enabled()
    _steps(b, cfg, info, 1, 3)
    state = TrainState(b, info, cfg)
    state.step = 3
    store = CheckpointStore(str(tmp_path), info)
    store.save({"train": state}, 3)
    tail = _steps(b, cfg, info, 4, 3)
    scale = b.scaler.state_dict()
    fresh = build(cfg, info)
    resumed = TrainState(fresh, info, cfg)
    assert store.load({"train": resumed}, log=lambda *_: None) == 3 and resumed.step == 3
    assert fresh.scaler.state_dict()["_growth_tracker"] == 3
    assert _steps(fresh, cfg, info, 4, 3) == tail and fresh.scaler.state_dict() == scale
    store.close()


def test_metrics_in_images(tmp_path):
    out = io.StringIO()
    m = MetricsLogger(str(tmp_path / "m.jsonl"), 1, True, 1, stream=out, unit="images")
    m.step(1, 2.0, 0.1, 1.0, 512, 0.5, 512, None, extra={"top1": 0.25})
    m.close()
    rec = json.loads((tmp_path / "m.jsonl").read_text())
    assert rec["images"] == 512 and rec["images_per_s"] == 1024 and rec["top1"] == 0.25
    assert "tokens_per_s" not in rec and "1.0k img/s" in out.getvalue()


def test_shards_on_s3_are_downloaded_once_per_node(s3, tmp_path, monkeypatch):
    env, proxy, direct = s3
    src = tmp_path / "src"
    write_shards(src, np.zeros((6, 8, 8, 3), np.uint8), np.arange(6), 6, shard_size=4)
    direct.create_bucket(Bucket="vision-data")
    for f in src.iterdir():
        direct.upload_file(str(f), "vision-data", f"sets/s/{f.name}")
    monkeypatch.setenv("TRAINYARD_CACHE", str(tmp_path / "cache"))
    proxy.reset(every=3, max_failures=2)
    local = resolve_data("s3://vision-data/sets/s", DistInfo())
    assert proxy.failures == 2  # transient errors retried away
    loader = ShardLoader(local, 3, DistInfo(), seed=0, hflip=False)
    assert loader.n_images == 6
    before = proxy.requests
    assert resolve_data("s3://vision-data/sets/s", DistInfo()) == local
    assert proxy.requests == before  # cached: no second download
