"""LLM data: prepare (BPE/byte, splits, dtype, llm.c files), shard checks, order, S3 prefetch.

The llm.c files here are written the way llm.c's ``dev/data/data_common.py`` documents them
(256 int32 header: magic, version, token count; then the tokens), independently of prepare.py.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from workloads.common.cli import ConfigError
from workloads.common.dist import DistInfo
from workloads.llm import data as D
from workloads.llm.prepare import import_llmc, write_dataset

LLMC_GPT2 = (20240520, 1, np.uint16)
LLMC_LLAMA3 = (20240801, 7, np.uint32)


def llmc_file(path: Path, tokens, kind=LLMC_GPT2) -> Path:
    magic, version, dtype = kind
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = magic, version, len(tokens)
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype=dtype).tobytes())
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """~200 KB of real text in 30 files (stdlib modules)."""
    import argparse
    import json as j
    import textwrap

    src = tmp_path_factory.mktemp("corpus")
    for mod in (argparse, j, textwrap):
        text = Path(mod.__file__).read_text()
        for i in range(10):
            (src / f"{mod.__name__.replace('.', '_')}-{i:02d}.py").write_text(
                text[i * len(text) // 10:(i + 1) * len(text) // 10])
    return src


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("bpe") / "d"
    files = sorted(corpus.iterdir())
    write_dataset(files, out, "test corpus", tokenizer="bpe", vocab_size=400,
                  val_fraction=0.05, shard_tokens=5000)
    return out


def test_bpe_prepare_writes_llmc_shards_splits_and_tokenizer(bpe_data, corpus):
    from workloads.llm.tokenizer import load

    m = json.loads((bpe_data / "manifest.json").read_text())
    assert (m["tokenizer"], m["dtype"], m["vocab_size"], m["format"]) == \
        ("bpe", "uint16", 400, "trainyard-tokens-v2")
    assert set(m["splits"]) == {"train", "val"} and len(m["splits"]["train"]) > 3
    counts = {s: sum(e["tokens"] for e in v) for s, v in m["splits"].items()}
    assert counts["train"] + counts["val"] == m["total_tokens"]
    assert 0.04 < counts["val"] / m["total_tokens"] <= 0.05
    tok = load(bpe_data)
    stream = []
    for e in m["splits"]["train"]:  # llm.c layout: header, then uint16 tokens
        raw = (bpe_data / e["file"]).read_bytes()
        header = np.frombuffer(raw[:1024], dtype="<i4")
        assert list(header[:3]) == [20240520, 1, e["tokens"]] and not header[3:].any()
        body = np.frombuffer(raw[1024:], dtype="<u2")
        assert body.size == e["tokens"] and int(body.max()) == e["max_token_id"]
        stream += body.tolist()
    # Documents are BOS + text + EOS. The first 9,000 tokens are all train (val takes its first
    # 512-token segment once 5% of the tokens so far fit it: after 9,728), so they decode back
    # to the start of the corpus, file after file.
    text = "".join(f.read_text() for f in sorted(corpus.iterdir())[:3])
    assert stream[0] == tok.bos_id and tok.eos_id in stream[:9000]
    decoded = tok.decode([t for t in stream[:9000] if t not in (tok.bos_id, tok.eos_id)])
    assert len(decoded) > 5000 and text.startswith(decoded.rstrip("\ufffd"))


def test_byte_prepare_and_uint32_for_a_large_vocabulary(tmp_path, corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers

    files = sorted(corpus.iterdir())[:3]
    byte = write_dataset(files, tmp_path / "byte", "c", tokenizer="byte", val_fraction=0)
    assert (byte["vocab_size"], byte["dtype"], byte["tokenizer"]) == (256, "uint16", "byte")
    assert list(byte["splits"]) == ["train"]
    assert byte["total_tokens"] == sum(f.stat().st_size + 1 for f in files)  # + NUL each
    # A 70,000-word vocabulary (an existing tokenizer.json): ids need uint32 and llm.c's
    # llama-3 header.
    vocab = {f"w{i}": i for i in range(70_000)} | {"<|end_of_text|>": 70_000}
    big = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    big.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "big.json").write_text(big.to_str())
    src = tmp_path / "words.txt"
    src.write_text(" ".join(f"w{i}" for i in range(65_000, 70_000)))
    m = write_dataset([src], tmp_path / "u32", "w", tokenizer=str(tmp_path / "big.json"),
                      val_fraction=0)
    assert (m["dtype"], m["vocab_size"], m["max_token_id"]) == ("uint32", 70_001, 70_000)
    shard = tmp_path / "u32" / m["splits"]["train"][0]["file"]
    assert list(np.fromfile(shard, dtype="<i4", count=2)) == [20240801, 7]
    loader = D.ShardLoader(tmp_path / "u32", 8, 1, 1, DistInfo(), 0)
    assert loader.next_batch()[0][0].max() >= 65_000


def test_prepare_cli_bad_input_is_one_line(tmp_path, wl, cache_dir):
    cases = [(["--tokenizer", "byte", "--vocab-size", "512"], "--vocab-size", "bpe only"),
             (["--vocab-size", "100"], "--vocab-size", "must be in [259"),
             (["--val-fraction", "0.7"], "--val-fraction", "[0, 0.5)"),
             (["--tokenizer", str(tmp_path / "nope.json")], "--tokenizer", "not bpe, byte"),
             (["--llmc", str(tmp_path / "*.bin")], "--llmc", "needs --tokenizer PATH")]
    for args, flag, message in cases:
        proc = wl.run_module("workloads.llm.prepare", ["--out", str(tmp_path / "o"), *args],
                             cache_dir)
        assert proc.returncode == 2 and flag in proc.stderr and message in proc.stderr, proc
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("x" * 100)
    proc = wl.run_module("workloads.llm.prepare", ["--out", str(tmp_path / "o"), "--source",
                                                   str(tiny), "--tokenizer", "byte"], cache_dir)
    assert proc.returncode == 2 and "--val-fraction" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing half-built left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


def test_prepare_cli_bpe_end_to_end(tmp_path, wl, cache_dir, corpus):
    proc = wl.run_module("workloads.llm.prepare", ["--out", str(tmp_path / "o"), "--source",
                                                   str(corpus), "--vocab-size", "300",
                                                   "--val-fraction", "0.02"], cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert "tokenizer: bpe, vocab 300, uint16" in proc.stdout and "M tokens/s" in proc.stdout
    assert (tmp_path / "o" / "tokenizer.json").is_file()


# ----- refusals: one ConfigError naming the file -----
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _manifest(root: Path, **changes) -> dict:
    m = json.loads((root / "manifest.json").read_text())
    m.update(changes)
    (root / "manifest.json").write_text(json.dumps(m))
    return m


def _refused(root: Path, *needles: str, **kw) -> None:
    with pytest.raises(ConfigError) as e:
        D.ShardLoader(root, 16, 2, 1, DistInfo(), 0, **kw)
    msg = str(e.value)
    assert msg.startswith("--data: ") and "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_a_shard_that_disagrees_with_its_manifest_is_refused(tmp_path, bpe_data):
    shard = "train-00001.bin"
    d = _copy(bpe_data, tmp_path / "trunc")
    with open(d / shard, "r+b") as f:
        f.truncate((d / shard).stat().st_size - 2)
    _refused(d, shard, "truncated or not llm.c")
    d = _copy(bpe_data, tmp_path / "raw")  # raw tokens, no header: never read as tokens
    (d / shard).write_bytes((d / shard).read_bytes()[1024:])
    _refused(d, shard, "is not an llm.c token file")
    d = _copy(bpe_data, tmp_path / "dtype")
    _manifest(d, dtype="uint32")
    _refused(d, shard.replace("1", "0"), "uint16 tokens (llm.c header), manifest says uint32")
    d = _copy(bpe_data, tmp_path / "count")
    m = json.loads((d / "manifest.json").read_text())
    m["splits"]["train"][1]["tokens"] -= 1
    (d / "manifest.json").write_text(json.dumps(m))
    _refused(d, shard, "header says")
    d = _copy(bpe_data, tmp_path / "missing")
    (d / shard).unlink()
    _refused(d, shard, "unreadable")
    d = _copy(bpe_data, tmp_path / "fmt")
    _manifest(d, format="something-else")
    _refused(d, "format", "rebuild")


def test_token_ids_are_checked_against_vocabularies(tmp_path, bpe_data):
    _refused(bpe_data, "token ids up to 399", "vocabulary is 256", model_vocab=256)
    loader = D.ShardLoader(bpe_data, 16, 2, 1, DistInfo(), 0)
    with pytest.raises(ConfigError, match="vocabulary is 300"):
        loader.check_vocab(300)
    loader.check_vocab(448)
    d = _copy(bpe_data, tmp_path / "lying")  # contents above what the manifest promises
    m = json.loads((d / "manifest.json").read_text())
    entry = m["splits"]["train"][0]
    arr = np.memmap(d / entry["file"], dtype="<u2", mode="r+", offset=1024)
    arr[5] = 399
    arr.flush()
    entry["max_token_id"] = 398
    m["max_token_id"] = 399
    (d / "manifest.json").write_text(json.dumps(m))
    loader = D.ShardLoader(d, 16, 2, 1, DistInfo(), 0)
    with pytest.raises(ConfigError, match=f"{entry['file']}: holds token id 399"):
        for _ in range(loader.n_windows):
            loader.next_batch()


def test_llmc_bins_are_read_exactly_or_refused(tmp_path):
    src = tmp_path / "llmc"
    src.mkdir()
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 50257, 3000) for _ in range(2)]
    val = rng.integers(0, 50257, 500)
    for i, t in enumerate(train):
        llmc_file(src / f"fineweb_train_{i:06d}.bin", t)
    llmc_file(src / "fineweb_val_000000.bin", val)
    m = import_llmc([str(src / "*.bin")], [], tmp_path / "ds", None, 50257)
    assert [e["file"] for e in m["splits"]["val"]] == ["fineweb_val_000000.bin"]
    assert m["dtype"] == "uint16" and m["total_tokens"] == 6500
    loader = D.ShardLoader(tmp_path / "ds", 99, 1, 1, DistInfo(), 0, split="val")
    x, y = next(loader.eval_batches(1))
    assert x[0].tolist() == val[:99].tolist() and y[0].tolist() == val[1:100].tolist()
    windows = set()
    tr = D.ShardLoader(tmp_path / "ds", 99, 1, 1, DistInfo(), 0)
    for _ in range(tr.n_windows):
        windows.add(tuple(tr.next_batch()[0][0][0].tolist()))
    expect = {tuple(t[i * 99:i * 99 + 99].tolist()) for t in train for i in range(2999 // 99)}
    assert windows == expect  # every window once, nothing from a header
    llmc_file(src / "bad_train.bin", [1, 2, 3], kind=(20240520, 2, np.uint16))
    with pytest.raises(ConfigError, match="bad_train.bin: header magic 20240520 version 2"):
        import_llmc([str(src / "bad_train.bin")], [], tmp_path / "ds2", None, 50257)
    with pytest.raises(ConfigError, match="token id .* >= vocabulary 1000"):
        import_llmc([str(src / "fineweb_train_*.bin")], [], tmp_path / "ds3", None, 1000)
    llmc_file(src / "big_train.bin", [70_000, 1], kind=LLMC_LLAMA3)
    m = import_llmc([str(src / "big_train.bin")], [], tmp_path / "ds4", None, 128256)
    assert m["dtype"] == "uint32"


# ----- order, resume, ranks, val -----
@pytest.fixture(scope="module")
def counting_data(tmp_path_factory) -> Path:
    """10 llm.c shards whose tokens are their positions (0..29,999): every window is unique."""
    d = tmp_path_factory.mktemp("counting")
    for i in range(10):
        llmc_file(d / f"part_{i:02d}.bin", np.arange(i * 3000, (i + 1) * 3000))
    import_llmc([str(d / "*.bin")], [], d / "ds", None, 30_000)
    return d / "ds"


def test_block_order_is_deterministic_resumable_and_covers_every_window(counting_data):
    def make(rank=0, world=2, seed=3):
        return D.ShardLoader(counting_data, 16, 2, 2, DistInfo(rank=rank, world_size=world),
                             seed)

    a = make()
    assert len(a.entries) > D.SHUFFLE_BLOCK  # several blocks
    for _ in range(5):
        a.next_batch()
    b = make()
    b.load_state_dict(a.state_dict())
    for _ in range(a.n_windows // a.per_step + 3):  # across an epoch boundary
        for (xa, ya), (xb, yb) in zip(a.next_batch(), b.next_batch(), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.state_dict()["epoch"] == 1
    r0, r1 = make(0), make(1)
    seen = []
    for _ in range(r0.n_windows // r0.per_step):
        for loader in (r0, r1):
            seen += [tuple(r.tolist()) for x, _ in loader.next_batch() for r in x]
    assert len(seen) == len(set(seen))  # ranks and steps never repeat a window in an epoch
    assert len(seen) == r0.n_windows // r0.per_step * r0.per_step
    assert all(r[0] % 3000 + 16 < 3000 for r in seen)  # never across a shard boundary
    # Block order: the first 4 x 187 windows come from 4 shards only (one block).
    order = make()._order()
    assert len({int(w) // 187 for w in order[:4 * 187]}) == D.SHUFFLE_BLOCK
    x, y = make().next_batch()[0]
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert not torch.equal(make(seed=4).next_batch()[0][0], make().next_batch()[0][0])


def test_val_split_batches_are_fixed_disjoint_and_refused_when_absent(tmp_path, bpe_data):
    def val(rank):
        return D.ShardLoader(bpe_data, 16, 2, 1, DistInfo(rank=rank, world_size=2), 0,
                             split="val")

    v0, v1 = val(0), val(1)
    assert v0.eval_batch_count() == v0.n_windows // 4 == v1.eval_batch_count()
    first = [x for x, _ in v0.eval_batches(3)]
    assert len(first) == 3 and all(torch.equal(a, b)
                                   for a, b in zip(first, [x for x, _ in v0.eval_batches(3)],
                                                   strict=True))
    rows0 = {tuple(r.tolist()) for x, _ in v0.eval_batches() for r in x}
    rows1 = {tuple(r.tolist()) for x, _ in v1.eval_batches() for r in x}
    assert rows0 and not rows0 & rows1
    d = _copy(bpe_data, tmp_path / "noval")
    m = json.loads((d / "manifest.json").read_text())
    del m["splits"]["val"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="no 'val' split .* --val-fraction"):
        D.ShardLoader(d, 16, 2, 1, DistInfo(), 0, split="val")


def test_default_corpus_is_built_once_under_a_lock(tmp_path, monkeypatch):
    calls = []
    import workloads.llm.prepare as P

    def fake_build(out):
        calls.append(out)
        time.sleep(0.2)
        write_dataset([Path(json.__file__)], out, "j", tokenizer="byte", val_fraction=0)
        return json.loads((out / "manifest.json").read_text())

    monkeypatch.setattr(P, "build_default", fake_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(D.resolve_data(None, None,
                                                                             tmp_path)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    assert (results[0] / "manifest.json").is_file()


# ----- S3: shard by shard, ahead of use -----
def test_s3_shards_arrive_one_by_one_ahead_of_use(s3, tmp_path, bpe_data, monkeypatch):
    """Each shard download takes 0.15 s more (moto behind the flaky proxy). When the first
    batch is out, at most two blocks' shards of the ~20 are fetched (the prefetcher never
    runs further ahead); the batches are exactly the local loader's; two ranks sharing a node
    cache download each shard once."""
    env, proxy, direct = s3
    direct.create_bucket(Bucket="data")
    for f in bpe_data.iterdir():
        direct.upload_file(str(f), "data", f"sets/bpe/{f.name}")
    proxy.reset(every=7, max_failures=4)
    from workloads.common import s3 as s3util

    real, done = s3util.download_file, []

    def slow_download(client, bucket, key, dest):
        time.sleep(0.15 if key.endswith(".bin") else 0)
        real(client, bucket, key, dest)
        done.append((time.perf_counter(), key.rsplit("/", 1)[1]))

    monkeypatch.setattr(s3util, "download_file", slow_download)
    cache = tmp_path / "cache"
    src = D.resolve_data("s3://data/sets/bpe", DistInfo(), cache)
    assert src.tokenizer_path() is not None and src.tokenizer_path().is_file()
    n_shards = len(src.manifest["splits"]["train"])
    remote = [D.ShardLoader(D.DataSource("s3://data/sets/bpe", cache), 16, 2, 1,
                            DistInfo(rank=r, world_size=2), 7) for r in (0, 1)]
    local = [D.ShardLoader(bpe_data, 16, 2, 1, DistInfo(rank=r, world_size=2), 7)
             for r in (0, 1)]
    first = [lo.next_batch() for lo in remote]
    t_first = time.perf_counter()
    shards_by_then = {k for t, k in done if t <= t_first and k.startswith("train-")}
    assert 0 < len(shards_by_then) <= 2 * D.SHUFFLE_BLOCK < n_shards  # 2 blocks at most
    for r in (0, 1):
        assert all(torch.equal(a[0], b[0]) for a, b in zip(first[r], local[r].next_batch(),
                                                           strict=True))
    for _ in range(remote[0].n_windows // remote[0].per_step - 1):
        for r in (0, 1):
            got, want = remote[r].next_batch(), local[r].next_batch()
            assert all(torch.equal(a[0], b[0]) for a, b in zip(got, want, strict=True))
    train_keys = [k for _, k in done if k.startswith("train-")]
    assert sorted(train_keys) == sorted({e["file"] for e in src.manifest["splits"]["train"]})
    assert remote[0].stall_s > 0 and proxy.failures == 4
    for lo in remote:
        lo.close()
    # A different dataset under the same prefix: the cached shards are dropped, not reused.
    m = json.loads((bpe_data / "manifest.json").read_text())
    m["source"] = "changed"
    direct.put_object(Bucket="data", Key="sets/bpe/manifest.json", Body=json.dumps(m).encode())
    D.DataSource("s3://data/sets/bpe", cache)
    assert not list((cache / "s3" / "data" / "sets" / "bpe").glob("train-*.bin"))
