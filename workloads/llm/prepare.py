"""Build token shards for ``workloads.llm.train``: a tokenizer, a train split and a held-out split.

Corpus: ``--source PATH`` (a file or a directory of text files, sorted), default the **Python
standard library's own .py sources** (``sysconfig.get_paths()["stdlib"]``, site-packages and the
test suites excluded): about 12 MB of real text on every machine, no download.

Tokenizer (``--tokenizer``): ``bpe`` (default) trains a byte-level BPE with ``--vocab-size`` ids
on the corpus (``tokenizers``; see ``tokenizer.py``); ``byte`` uses UTF-8 bytes (vocab 256, for
the smallest tests); a path takes an existing ``tokenizer.json``. It is written beside the
shards as ``tokenizer.json`` and travels with checkpoints and exports.

Shards are llm.c ``.bin`` files (karpathy/llm.c ``dev/data/data_common.py``): 256 little-endian
int32 header (magic, version, token count), then the tokens, uint16 (magic 20240520, version 1)
when the vocabulary fits, else uint32 (magic 20240801, version 7). ``--llmc GLOB`` takes llm.c
files as they are (their headers checked; names containing ``val`` form the val split).
Each document is written as [BOS] + tokens + [EOS] (byte: tokens + NUL).

Held-out split (``--val-fraction``, default 0.01): the documents' token stream is cut into
512-token segments (across document boundaries) and a segment goes to ``val`` whenever that
keeps val at or below the fraction of the tokens so far: every ~1/fraction-th segment, spread
over the corpus, deterministic. Segments are cut in the middle of documents.

``manifest.json``::

    {"format": "trainyard-tokens-v2", "dtype": "uint16", "vocab_size": 512, "tokenizer": "bpe",
     "tokenizer_file": "tokenizer.json", "bos_id": 0, "eos_id": 1, "source": "...",
     "total_tokens": N, "max_token_id": 511, "val_fraction": 0.01,
     "splits": {"train": [{"file": "train-00000.bin", "tokens": n, "max_token_id": m}, ...],
                "val": [...]}}

Usage (``out/`` is git-ignored)::

    python -m workloads.llm.prepare --out out/data/stdlib --vocab-size 8192
    python -m workloads.llm.prepare --out out/data/mine --source ~/corpus --tokenizer byte
    python -m workloads.llm.prepare --out out/data/fw --llmc '~/fineweb10B/*.bin' \\
        --tokenizer gpt2/tokenizer.json
    aws s3 sync out/data/stdlib s3://my-bucket/datasets/stdlib   # train --data s3://...
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workloads.common.cli import ArgumentParser, ConfigError, die
from workloads.common.config import check_writable_dir

PROG = "python -m workloads.llm.prepare"
DESCRIPTION = ("Build llm.c-format token shards (train + val split, BPE or byte tokenizer) for "
               "python -m workloads.llm.train --data, from the Python standard library's "
               "sources (no download), --source or existing llm.c files (--llmc).")
FORMAT = "trainyard-tokens-v2"
FORMAT_V1 = "trainyard-tokens-v1"  # raw uint16, no header: read only (older caches)
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
HEADER_INTS = 256
HEADER_BYTES = 4 * HEADER_INTS
LLMC = {"uint16": (20240520, 1), "uint32": (20240801, 7)}
"""llm.c's header per token dtype: (magic, version)."""
SEGMENT = 512
"""Tokens per unit of the train/val split."""
DEFAULT_VOCAB = 8192


# ----- the shard format (shared with data.py) -----
def dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def write_shard(path: Path, tokens: np.ndarray, dtype: str) -> None:
    magic, version = LLMC[dtype]
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = magic, version, tokens.size
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2" if dtype == "uint16" else "<u4").tobytes())


def read_header(path: Path) -> tuple[str, int]:
    """(dtype, tokens) of an llm.c-format file; ValueError naming the file when it is not one
    or its size disagrees with its header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ValueError(f"{path}: {size} bytes, shorter than the 1024-byte llm.c header")
    magic, version, count = (int(x) for x in np.frombuffer(raw[:12], dtype="<i4"))
    dtype = next((d for d, mv in LLMC.items() if mv == (magic, version)), None)
    if dtype is None:
        known = ", ".join(f"{m}/v{v} ({d})" for d, (m, v) in LLMC.items())
        raise ValueError(f"{path}: header magic {magic} version {version} is not an llm.c token "
                         f"file ({known})")
    itemsize = 2 if dtype == "uint16" else 4
    if count < 0 or size != HEADER_BYTES + count * itemsize:
        raise ValueError(f"{path}: {size} bytes, but its header says {count} {dtype} tokens "
                         f"({HEADER_BYTES + count * itemsize} bytes): truncated or not llm.c")
    return dtype, count


# ----- corpus -----
def stdlib_files() -> tuple[str, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS)
        out += [Path(d) / f for f in sorted(files) if f.endswith(".py")]
    return f"python{sys.version_info[0]}.{sys.version_info[1]} stdlib .py sources ({root})", out


def source_files(source: Path) -> tuple[str, list[Path]]:
    if source.is_file():
        return str(source), [source]
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    return str(source), files


def _texts(files: list[Path], limit: int = 0) -> Iterator[str]:
    """Each file as text (invalid UTF-8 replaced by U+FFFD), up to ``limit`` bytes in all."""
    seen = 0
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        yield text
        seen += len(text)
        if limit and seen >= limit:
            return


class SplitWriter:
    """Documents in, llm.c shards of one split out (a new shard after ``shard_tokens``)."""

    def __init__(self, out: Path, split: str, dtype: str, shard_tokens: int) -> None:
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.buf: list[np.ndarray] = []
        self.pending = self.tokens = 0
        self.shards: list[dict] = []

    def add(self, tokens: np.ndarray) -> None:
        self.buf.append(tokens)
        self.pending += tokens.size
        self.tokens += tokens.size
        if self.pending >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        arr = np.concatenate(self.buf)
        name = f"{self.split}-{len(self.shards):05d}.bin"
        write_shard(self.out / name, arr, self.dtype)
        self.shards.append({"file": name, "tokens": int(arr.size),
                            "max_token_id": int(arr.max(initial=0))})
        self.buf, self.pending = [], 0


def split_documents(docs: Iterator[np.ndarray], writers: dict[str, SplitWriter],
                    val_fraction: float, max_tokens: int = 0) -> int:
    """Cut the documents' token stream into 512-token segments and route each to train or val
    (val when it still fits in ``val_fraction`` of the tokens so far); the total token count."""
    total = val = 0
    carry = np.empty(0, dtype=np.uint32)

    def route(seg: np.ndarray) -> None:
        nonlocal total, val
        if val_fraction and val + seg.size <= val_fraction * (total + seg.size):
            writers["val"].add(seg)
            val += seg.size
        else:
            writers["train"].add(seg)
        total += seg.size

    for doc in docs:
        if max_tokens:
            doc = doc[:max_tokens - total - carry.size]
        carry = np.concatenate([carry, doc]) if carry.size else doc
        n = carry.size // SEGMENT * SEGMENT
        for i in range(0, n, SEGMENT):
            route(carry[i:i + SEGMENT])
        carry = carry[n:]
        if max_tokens and total + carry.size >= max_tokens:
            break
    if carry.size:
        route(carry)
    for w in writers.values():
        w.flush()
    return total


def _publish(tmp: Path, out: Path) -> dict:
    """Rename the finished temp dir into place (a concurrent builder may have won: keep theirs)."""
    try:
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "manifest.json").is_file():
            raise
    return json.loads((out / "manifest.json").read_text())


def write_dataset(files: list[Path], out: Path, source: str, tokenizer: str = "bpe",
                  vocab_size: int = DEFAULT_VOCAB, val_fraction: float = 0.01,
                  max_tokens: int = 0, shard_tokens: int = 16 * 2**20,
                  tokenizer_train_bytes: int = 256 * 2**20, log=lambda msg: None) -> dict:
    """Tokenize ``files`` into ``out`` (train/val shards, tokenizer.json, manifest.json).

    ``tokenizer``: "bpe" (trained here), "byte", or a path to a tokenizer.json. Built in a
    temporary sibling and renamed into place: never a half-built dataset where a trainer looks.
    """
    from workloads.llm import tokenizer as tk

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        if tokenizer == "byte":
            tok = tk.byte_tokenizer()
        elif tokenizer == "bpe":
            t0 = time.perf_counter()
            tok = tk.train_bpe(_texts(files, tokenizer_train_bytes), vocab_size)
            log(f"prepare: trained a {tok.vocab_size}-token byte-level BPE in "
                f"{time.perf_counter() - t0:.1f} s")
        else:
            tok = tk.from_file(Path(tokenizer))
        tok.save(tmp)
        dtype = dtype_for(tok.vocab_size)
        writers = {s: SplitWriter(tmp, s, dtype, shard_tokens) for s in ("train", "val")}
        total = split_documents(_documents(files, tok), writers, val_fraction, max_tokens)
        if val_fraction and not writers["val"].shards:
            raise ConfigError("--val-fraction", f"{val_fraction} of {total:,} tokens is less "
                                                f"than one {SEGMENT}-token segment; use more "
                                                "data or --val-fraction 0")
        splits = {s: w.shards for s, w in writers.items() if w.shards}
        manifest = {"format": FORMAT, "dtype": dtype, "vocab_size": tok.vocab_size,
                    "tokenizer": tok.kind, "tokenizer_file": tk.FILE, "bos_id": tok.bos_id,
                    "eos_id": tok.eos_id, "source": source, "total_tokens": total,
                    "max_token_id": max(s["max_token_id"] for v in splits.values() for s in v),
                    "val_fraction": val_fraction, "splits": splits}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, out)


def _documents(files: list[Path], tok) -> Iterator[np.ndarray]:
    """Each file as one document's token array ([BOS] + ids + [EOS]); batches of 64 files are
    encoded in parallel by ``tokenizers``."""
    dt = np.uint32
    if tok.kind == "byte":  # raw bytes are the ids: no decode/encode round trip
        for path in files:
            yield np.frombuffer(path.read_bytes() + bytes([tok.eos_id]), dtype=np.uint8)
        return
    batch: list[str] = []
    texts = _texts(files)
    while True:
        batch = [t for _, t in zip(range(64), texts, strict=False)]
        if not batch:
            return
        for ids in tok.encode_batch(batch):
            yield np.asarray(tok.document(ids), dtype=dt)


def import_llmc(patterns: list[str], val_patterns: list[str], out: Path, tokenizer: str | None,
                vocab_size: int | None) -> dict:
    """Take llm.c ``.bin`` files as shards (headers checked; hard-linked when possible)."""
    from workloads.llm import tokenizer as tk

    def expand(pats: list[str], flag: str) -> list[Path]:
        paths = []
        for pat in pats:
            found = sorted(glob.glob(os.path.expanduser(pat)))
            if not found:
                raise ConfigError(flag, f"{pat!r} matches no file")
            paths += [Path(p) for p in found]
        return paths

    val_re = re.compile(r"(^|[_.-])val([_.-]|$)")
    files = expand(patterns, "--llmc")
    val = expand(val_patterns, "--llmc-val")
    val += [p for p in files if val_re.search(p.stem) and p not in val]
    train = [p for p in files if p not in val]
    if tokenizer == "byte":
        tok = tk.byte_tokenizer()
    else:
        tok = tk.from_file(Path(tokenizer)) if tokenizer else None
    vocab = tok.vocab_size if tok else vocab_size
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        splits, dtypes, total = {}, set(), 0
        for split, paths in (("train", train), ("val", val)):
            for p in paths:
                try:
                    dtype, count = read_header(p)
                except ValueError as e:
                    raise ConfigError("--llmc", str(e)) from None
                body = np.memmap(p, dtype="<u2" if dtype == "uint16" else "<u4", mode="r",
                                 offset=HEADER_BYTES, shape=(count,))
                mx = int(body.max(initial=0))
                if mx >= vocab:
                    raise ConfigError("--llmc", f"{p}: token id {mx} >= vocabulary {vocab}")
                try:
                    os.link(p, tmp / p.name)
                except OSError:
                    shutil.copyfile(p, tmp / p.name)
                splits.setdefault(split, []).append({"file": p.name, "tokens": count,
                                                     "max_token_id": mx})
                dtypes.add(dtype)
                total += count
        if "train" not in splits:
            raise ConfigError("--llmc", "no training files (every match looks like a val file)")
        if len(dtypes) > 1:
            raise ConfigError("--llmc", "the files mix uint16 and uint32 tokens")
        if tok:
            tok.save(tmp)
        manifest = {"format": FORMAT, "dtype": dtypes.pop(), "vocab_size": vocab,
                    "tokenizer": tok.kind if tok else "bpe",
                    "tokenizer_file": tk.FILE if tok else None,
                    "bos_id": tok.bos_id if tok else None, "eos_id": tok.eos_id if tok else None,
                    "source": "llm.c files: " + " ".join(patterns + val_patterns),
                    "total_tokens": total,
                    "max_token_id": max(s["max_token_id"] for v in splits.values() for s in v),
                    "val_fraction": None, "splits": splits}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, out)


def build_default(out: Path, max_tokens: int = 0, tokenizer: str = "byte",
                  val_fraction: float = 0.01, **kw) -> dict:
    """The stdlib corpus (the trainer's no-``--data`` default: byte tokens, 1% held out)."""
    source, files = stdlib_files()
    return write_dataset(files, out, source, tokenizer=tokenizer, val_fraction=val_fraction,
                         max_tokens=max_tokens, **kw)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--source", help="file or directory of text (default: the Python stdlib)")
    p.add_argument("--tokenizer", default="bpe",
                   help="bpe (train one, default), byte, or a tokenizer.json (file or its dir)")
    p.add_argument("--vocab-size", type=int, help=f"BPE vocabulary (default {DEFAULT_VOCAB})")
    p.add_argument("--val-fraction", type=float, default=0.01,
                   help="share of tokens held out as the val split (default 0.01; 0: none)")
    p.add_argument("--max-tokens", type=int, default=0, help="stop after N tokens (0: all)")
    p.add_argument("--shard-tokens", type=int, default=16 * 2**20,
                   help="start a new shard once this many tokens are written (default 16Mi)")
    p.add_argument("--tokenizer-train-bytes", type=int, default=256 * 2**20,
                   help="train the BPE on the first N bytes of the corpus (default 256 MiB)")
    p.add_argument("--llmc", action="append", default=[], metavar="GLOB",
                   help="existing llm.c .bin files to use as shards (repeatable)")
    p.add_argument("--llmc-val", action="append", default=[], metavar="GLOB",
                   help="llm.c files for the val split (names containing 'val' go there too)")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except ConfigError as e:
        die(f"{PROG}: error: {e}")


def _main(args) -> int:
    out = Path(args.out)
    if out.exists():
        raise ConfigError("--out", f"{args.out!r} already exists")
    check_writable_dir(out, "--out")
    for flag, value, low in (("--max-tokens", args.max_tokens, 0),
                             ("--shard-tokens", args.shard_tokens, 1),
                             ("--tokenizer-train-bytes", args.tokenizer_train_bytes, 1)):
        if value < low:
            raise ConfigError(flag, f"must be >= {low}, got {value}")
    if not 0.0 <= args.val_fraction < 0.5:
        raise ConfigError("--val-fraction", f"must be in [0, 0.5), got {args.val_fraction}")
    tokenizer = args.tokenizer
    if tokenizer not in ("bpe", "byte"):
        path = Path(tokenizer)
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise ConfigError("--tokenizer", f"{tokenizer!r}: not bpe, byte or a tokenizer.json")
        try:
            from workloads.llm.tokenizer import from_file

            from_file(path)
        except ValueError as e:
            raise ConfigError("--tokenizer", str(e)) from None
        tokenizer = str(path)
    if args.vocab_size is not None and tokenizer != "bpe" and not args.llmc:
        raise ConfigError("--vocab-size", "applies to --tokenizer bpe only (a byte or existing "
                                          "tokenizer brings its own vocabulary)")
    if args.vocab_size is not None and not 259 <= args.vocab_size <= 2**32:
        raise ConfigError("--vocab-size", f"must be in [259, 2^32] (2 special tokens and 256 "
                                          f"bytes come first), got {args.vocab_size}")
    if args.llmc:
        if args.source:
            raise ConfigError("--llmc", "takes tokenized files; --source is for text")
        if tokenizer == "bpe":
            if args.vocab_size is None:
                raise ConfigError("--llmc", "needs --tokenizer PATH (the tokenizer.json the "
                                            "files were made with) or --vocab-size")
            tokenizer = None
        m = import_llmc(args.llmc, args.llmc_val, out, tokenizer, args.vocab_size)
    else:
        if args.llmc_val:
            raise ConfigError("--llmc-val", "only with --llmc")
        if args.source:
            src = Path(args.source)
            if not src.exists() or not os.access(src, os.R_OK):
                raise ConfigError("--source", f"{args.source!r} does not exist or is unreadable")
            source, files = source_files(src)
        else:
            source, files = stdlib_files()
        if not files:
            raise ConfigError("--source", f"no files under {source!r}")
        t0 = time.perf_counter()
        m = write_dataset(files, out, source, tokenizer, args.vocab_size or DEFAULT_VOCAB,
                          args.val_fraction, args.max_tokens, args.shard_tokens,
                          args.tokenizer_train_bytes, log=print)
        dt = time.perf_counter() - t0
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"prepare: {dt:.1f} s in all, {m['total_tokens'] / dt / 1e6:.2f}M tokens/s "
              f"({mb:.1f} MB of source)")
    counts = {s: sum(x["tokens"] for x in v) for s, v in m["splits"].items()}
    print(f"wrote {m['total_tokens']:,} tokens ("
          + ", ".join(f"{s} {n:,} in {len(m['splits'][s])} shard(s)" for s, n in counts.items())
          + f") to {out} (tokenizer: {m['tokenizer']}, vocab {m['vocab_size']}, {m['dtype']}, "
          f"source: {m['source']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
