"""Build token shards for ``workloads.llm.train`` from a corpus that is available offline.

Default corpus: the **Python standard library's own .py sources** of the interpreter running
this command (``sysconfig.get_paths()["stdlib"]``; site-packages and the test suites excluded),
in sorted path order: about 12 MB of real, varied text on every machine with Python, no
download. Tokenizer: **bytes** (UTF-8 bytes are the tokens, vocab 256; a NUL byte ends each
document). The corpus differs slightly between Python versions, so token counts do too.
``--source PATH`` takes any file or directory of text files instead.

Output: ``shard-00000.bin`` ... raw little-endian uint16 tokens (memory-mapped by the loader;
uint16 also fits a GPT-2 BPE vocabulary) and ``manifest.json``::

    {"format": "trainyard-tokens-v1", "dtype": "uint16", "vocab_size": 256, "tokenizer": "bytes",
     "source": "...", "total_tokens": N, "max_token_id": 255,
     "shards": [{"file": "shard-00000.bin", "tokens": n}]}

Usage (``out/`` is git-ignored; ``trainyard review`` wants a clean tree)::

    python -m workloads.llm.prepare --out out/data/stdlib    # then: train --data out/data/stdlib
    python -m workloads.llm.prepare --out out/data/mine --source ~/corpus --max-tokens 50000000
    aws s3 sync out/data/stdlib s3://my-bucket/datasets/stdlib   # train --data s3://...
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

from workloads.common.cli import ArgumentParser, ConfigError, die
from workloads.common.config import check_writable_dir

PROG = "python -m workloads.llm.prepare"
DESCRIPTION = ("Build uint16 token shards (byte tokenizer) for python -m workloads.llm.train "
               "--data, from the Python standard library's sources (no download) or --source.")
FORMAT = "trainyard-tokens-v1"
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
EOD = 0  # end-of-document byte


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


def write_shards(files: list[Path], out: Path, source: str, max_tokens: int = 0,
                 shard_tokens: int = 16 * 2**20) -> dict:
    """Tokenize ``files`` (bytes) into uint16 shards under ``out``; returns the manifest.

    Written to a temporary sibling and renamed into place, so concurrent or interrupted runs
    never leave a half-built dataset where a trainer would pick it up.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    shards, buf, total, max_id = [], [], 0, 0

    def flush() -> None:
        if buf:
            arr = np.concatenate(buf).astype("<u2")
            name = f"shard-{len(shards):05d}.bin"
            arr.tofile(tmp / name)
            shards.append({"file": name, "tokens": int(arr.size)})
            buf.clear()

    pending = 0
    for path in files:
        data = np.frombuffer(path.read_bytes() + bytes([EOD]), dtype=np.uint8)
        if max_tokens:
            data = data[: max_tokens - total]
        buf.append(data)
        max_id = max(max_id, int(data.max(initial=0)))
        pending += data.size
        total += data.size
        if pending >= shard_tokens:
            flush()
            pending = 0
        if max_tokens and total >= max_tokens:
            break
    flush()
    manifest = {"format": FORMAT, "dtype": "uint16", "vocab_size": 256, "tokenizer": "bytes",
                "source": source, "total_tokens": total, "max_token_id": max_id,
                "shards": shards}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    try:
        os.rename(tmp, out)
    except OSError:  # someone else finished first (or out exists): keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "manifest.json").is_file():
            raise
    return json.loads((out / "manifest.json").read_text())


def build_default(out: Path, max_tokens: int = 0) -> dict:
    source, files = stdlib_files()
    return write_shards(files, out, source, max_tokens=max_tokens)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--source", help="file or directory of text (default: the Python stdlib)")
    p.add_argument("--max-tokens", type=int, default=0, help="stop after N tokens (0: all)")
    p.add_argument("--shard-tokens", type=int, default=16 * 2**20, help="start a new shard once this many tokens are written (documents are not split)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        die(f"{PROG}: error: --out: {args.out!r} already exists")
    try:
        check_writable_dir(out, "--out")
    except ConfigError as e:
        die(f"{PROG}: error: {e}")
    if args.max_tokens < 0:
        die(f"{PROG}: error: --max-tokens: must be >= 0, got {args.max_tokens}")
    if args.shard_tokens <= 0:
        die(f"{PROG}: error: --shard-tokens: must be > 0, got {args.shard_tokens}")
    if args.source:
        src = Path(args.source)
        if not src.exists() or not os.access(src, os.R_OK):
            die(f"{PROG}: error: --source: {args.source!r} does not exist or is unreadable")
        source, files = source_files(src)
    else:
        source, files = stdlib_files()
    if not files:
        die(f"{PROG}: error: --source: no files under {source!r}")
    m = write_shards(files, out, source, args.max_tokens, args.shard_tokens)
    print(f"wrote {m['total_tokens']:,} tokens in {len(m['shards'])} shard(s) to {out} "
          f"(tokenizer: bytes, source: {m['source']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
