"""Export a training checkpoint as a Hugging Face Llama model (config, safetensors, tokenizer).

    python -m workloads.llm.export --checkpoint out/demo-ckpt --out out/demo-export
    python -m workloads.llm.export --checkpoint s3://B/ckpt/run1 --out s3://B/exports/run1 \\
        --step 20000 --dtype bfloat16

Reads the checkpoint root's ``model.json`` (the ModelConfig, written by the trainer) and the
DCP step directory (the newest complete one, or ``--step``), saved by any number of ranks:
``torch.distributed.checkpoint`` reassembles the full tensors in one process, no process group,
and only the ``model`` entries are read (not the optimizer's). Writes::

    config.json             LlamaConfig (architectures LlamaForCausalLM, rope_theta, GQA heads...)
    generation_config.json  bos/eos ids
    model.safetensors       "model.embed_tokens.weight", ...; a tied head is stored once
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (PreTrainedTokenizerFast)
    trainyard.json          where it came from (checkpoint, step, preset)

Parameter names already match LlamaForCausalLM's (``model.py``): the export adds the ``model.``
prefix. Local output is built in a temporary sibling and renamed into place; S3 output is
uploaded with ``config.json`` last (a reader that finds config.json finds everything).
Load it with ``transformers.AutoModelForCausalLM.from_pretrained(DIR)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from workloads.common import s3 as s3util
from workloads.common.checkpoint import CheckpointStore, cache_root, step_name
from workloads.common.cli import ArgumentParser, ConfigError, die, parse_s3_url
from workloads.common.dist import DistInfo
from workloads.llm import tokenizer as tk
from workloads.llm.config import ModelConfig

PROG = "python -m workloads.llm.export"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
WRAPPERS = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


@dataclass
class Loaded:
    """A checkpoint read back into one process."""

    cfg: ModelConfig
    meta: dict
    """model.json as written by the trainer."""
    step: int
    weights: dict[str, torch.Tensor]
    """Llama(cfg).state_dict() names; a tied lm_head is absent (it is embed_tokens)."""
    tokenizer: tk.Tokenizer | None


def _root_file(uri: str, name: str) -> bytes | None:
    return CheckpointStore(uri, DistInfo()).read_root_file(name)


def read_model_json(uri: str) -> tuple[ModelConfig, dict]:
    if not uri.startswith("s3://") and not Path(uri).is_dir():  # (the store would create it)
        raise ConfigError("--checkpoint", f"{uri!r} is not a directory")
    raw = _root_file(uri, "model.json")
    if raw is None:
        raise ConfigError("--checkpoint", f"{uri}: no model.json at the checkpoint root (the "
                                          "trainer writes it; is this a checkpoint directory?)")
    try:
        meta = json.loads(raw)
        cfg = ModelConfig(**meta["model"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError("--checkpoint", f"{uri}/model.json: unreadable "
                                          f"({type(e).__name__}: {e})") from None
    return cfg, meta


def _plain_name(key: str) -> str:
    for w in WRAPPERS:
        key = key.replace(w, "")
    return key


def load_weights(step_dir: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The full fp32 weights from a DCP directory written by any number of ranks."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    from workloads.llm.model import Llama

    md = FileSystemReader(str(step_dir)).read_metadata()
    # The trainer nests the model's state dict ("model" in the saved state, which the loop may
    # nest again, e.g. "train.model.embed_tokens.weight"): find that prefix.
    tensors = {k: v for k, v in md.state_dict_metadata.items()
               if isinstance(v, TensorStorageMetadata)}
    prefixes = sorted(k[:-len("embed_tokens.weight")] for k in tensors
                      if k.endswith("model.embed_tokens.weight"))
    if not prefixes:
        raise ConfigError("--checkpoint", f"{step_dir}: no model.embed_tokens.weight in the "
                                          "checkpoint (not a trainyard LLM checkpoint?)")
    prefix = prefixes[0]
    stored = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    with torch.device("meta"):
        ref = Llama(cfg).state_dict()
    want = {k for k in ref if not (cfg.tie_embeddings and k == "lm_head.weight")}
    by_plain = {_plain_name(k): k for k in stored}
    missing = sorted(want - set(by_plain))
    extra = sorted(set(by_plain) - set(ref))
    if missing or extra:
        raise ConfigError("--checkpoint", f"{step_dir}: weights do not match model.json "
                                          f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name in want:
        got = tuple(stored[by_plain[name]].size)
        if got != tuple(ref[name].shape):
            raise ConfigError("--checkpoint", f"{step_dir}: {name} is {list(got)}, model.json "
                                              f"says {list(ref[name].shape)}")
    # A flat dict keyed by the stored (flattened) names: only these are read, not the optimizer.
    state = {prefix + by_plain[n]: torch.empty(tuple(stored[by_plain[n]].size),
                                               dtype=stored[by_plain[n]].properties.dtype)
             for n in want}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed.*")
        dcp.load(state, checkpoint_id=str(step_dir), no_dist=True)
    return {_plain_name(k[len(prefix):]): v.float() for k, v in state.items()}


def load_checkpoint(uri: str, step: int | None = None, tokenizer: str | None = None) -> Loaded:
    """model.json, the weights of ``step`` (default: the newest complete checkpoint) and the
    tokenizer (``tokenizer``: a tokenizer.json path overriding the one at the root)."""
    cfg, meta = read_model_json(uri)
    store = CheckpointStore(uri, DistInfo())
    if step is None:
        step = store.latest_complete(log=lambda msg: None)
        if step is None:
            raise ConfigError("--checkpoint", f"{uri}: no complete checkpoint")
    else:
        problem = store.check(step)
        if problem:
            raise ConfigError("--step", f"{step_name(step)} under {uri}: {problem}")
    if uri.startswith("s3://"):  # the step's files are staged on local disk (the cache)
        cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root() if uri.startswith("s3://") else None) as t:
        step_dir = Path(uri) / step_name(step)
        if uri.startswith("s3://"):
            step_dir = Path(t) / step_name(step)
            s3util.download_prefix(store.client, store.bucket,
                                   s3util.join_key(store.prefix, step_name(step)), step_dir)
        weights = load_weights(step_dir, cfg)
    return Loaded(cfg, meta, step, weights, load_tokenizer(uri, meta, tokenizer))


def load_tokenizer(uri: str, meta: dict, override: str | None) -> tk.Tokenizer | None:
    kind = meta.get("tokenizer")
    try:
        if override:
            return tk.from_file(Path(override))
        raw = _root_file(uri, tk.FILE)
        if raw is None:
            return tk.byte_tokenizer() if kind in ("byte", "bytes") else None
        with tempfile.TemporaryDirectory() as t:
            (Path(t) / tk.FILE).write_bytes(raw)
            return tk.load(Path(t), kind)
    except ValueError as e:
        raise ConfigError("--tokenizer", str(e)) from None


def hf_config(cfg: ModelConfig, tok: tk.Tokenizer, dtype: str) -> dict:
    """config.json for LlamaForCausalLM (rope in both the v4 and v5 spellings)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.d_model, "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.seq_len, "rope_theta": cfg.rope_theta,
        "rope_scaling": None, "rope_parameters": {"rope_type": "default",
                                                  "rope_theta": cfg.rope_theta},
        "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
        "vocab_size": cfg.vocab_size, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
        "pad_token_id": None, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02, "pretraining_tp": 1,
        "use_cache": True, "torch_dtype": dtype, "dtype": dtype,
    }


def write_export(ld: Loaded, out_dir: Path, dtype: str, source: str) -> None:
    """Every export file into ``out_dir`` (an existing empty directory)."""
    from safetensors.torch import save_file

    tok = ld.tokenizer
    tensors = {(k if k == "lm_head.weight" else f"model.{k}"): v.to(DTYPES[dtype]).contiguous()
               for k, v in ld.weights.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    files = {"config.json": json.dumps(hf_config(ld.cfg, tok, dtype), indent=1),
             "generation_config.json": json.dumps({"bos_token_id": tok.bos_id,
                                                   "eos_token_id": tok.eos_id,
                                                   "pad_token_id": tok.eos_id}, indent=1),
             "trainyard.json": json.dumps({"checkpoint": source, "step": ld.step,
                                           "preset": ld.meta.get("preset"),
                                           "tokenizer": tok.kind, "dtype": dtype}, indent=1),
             **tok.hf_files(ld.cfg.seq_len)}
    for name, text in files.items():
        (out_dir / name).write_text(text)


def export(uri: str, out: str, step: int | None = None, dtype: str = "bfloat16",
           tokenizer: str | None = None) -> Loaded:
    ld = load_checkpoint(uri, step, tokenizer)
    if ld.tokenizer is None:
        raise ConfigError("--tokenizer", f"{uri} has no tokenizer.json (model.json says "
                                         f"{ld.meta.get('tokenizer')!r}); pass the one the data "
                                         "was prepared with: --tokenizer PATH")
    if ld.tokenizer.vocab_size > ld.cfg.vocab_size:
        raise ConfigError("--tokenizer", f"{ld.tokenizer.vocab_size} tokens, more than the "
                                         f"model's vocabulary of {ld.cfg.vocab_size}")
    if out.startswith("s3://"):
        bucket, prefix = parse_s3_url(out, "--out")
        client = s3util.s3_client()
        if s3util.list_objects(client, bucket, prefix):
            raise ConfigError("--out", f"{out} already holds objects; pick a new prefix")
        with tempfile.TemporaryDirectory() as t:
            write_export(ld, Path(t), dtype, uri)
            names = sorted(os.listdir(t), key=lambda n: n == "config.json")  # config.json last
            s3util.upload_dir(client, Path(t), bucket, prefix, names)
        return ld
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        write_export(ld, tmp, dtype, uri)
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ld


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description="Write a Hugging Face Llama checkpoint "
                       "(config.json, model.safetensors, tokenizer, generation config) from a "
                       "trainyard DCP checkpoint of any world size.")
    p.add_argument("--checkpoint", required=True, help="the training --checkpoint-dir "
                   "(directory or s3://bucket/prefix)")
    p.add_argument("--out", required=True, help="new directory or s3://bucket/prefix")
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest complete)")
    p.add_argument("--dtype", default="bfloat16", choices=list(DTYPES),
                   help="weights dtype in the export (default bfloat16)")
    p.add_argument("--tokenizer", help="tokenizer.json to ship instead of the checkpoint's")
    args = p.parse_args(argv)
    try:
        if not args.checkpoint.startswith("s3://") and not Path(args.checkpoint).is_dir():
            raise ConfigError("--checkpoint", f"{args.checkpoint!r} is not a directory")
        if not args.out.startswith("s3://") and Path(args.out).exists():
            raise ConfigError("--out", f"{args.out!r} already exists")
        if args.out.startswith("s3://"):
            s3util.check_access(args.out, "--out")
        if args.checkpoint.startswith("s3://"):
            s3util.check_access(args.checkpoint, "--checkpoint")
        if args.tokenizer and not Path(args.tokenizer).is_file():
            raise ConfigError("--tokenizer", f"{args.tokenizer!r} is not a file")
        t0 = time.perf_counter()
        ld = export(args.checkpoint, args.out, args.step, args.dtype, args.tokenizer)
    except ConfigError as e:
        die(f"{PROG}: error: {e}")
    n = sum(v.numel() for v in ld.weights.values())
    print(f"exported {step_name(ld.step)} of {args.checkpoint} ({n / 1e6:.2f}M parameters, "
          f"{args.dtype}, {ld.tokenizer.kind} tokenizer) to {args.out} in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
