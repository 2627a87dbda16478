"""Continue a prompt with a trained checkpoint, using our own model code (no transformers).

    python -m workloads.llm.generate --checkpoint out/demo-ckpt --prompt "def main(" \\
        --max-new-tokens 40 --greedy
    python -m workloads.llm.generate --checkpoint s3://B/ckpt/run1 --prompt "import" \\
        --max-new-tokens 100 --temperature 0.8 --top-k 50 --seed 1

Loads ``model.json``, the newest complete DCP checkpoint (or ``--step``) and the tokenizer
beside them (``export.load_checkpoint``), then samples token by token: the prompt is encoded
as a document start (BOS first, when the tokenizer has one) and generation stops at EOS or
after ``--max-new-tokens``. Greedy picks the arg-max; otherwise softmax(logits / temperature)
restricted to the top k, drawn from a generator seeded by ``--seed``.

No KV cache: every new token re-runs the model on the whole context (at most the model's
``seq_len`` tokens; a longer context keeps its last ``seq_len``). That costs O(T²) per token
and is fine for the small models this is for; serve exports with a real engine.
``--json`` prints the prompt and new token ids too (the export test compares them with
transformers' ``generate``).
"""

from __future__ import annotations

import json
import sys

import torch

from workloads.common.cli import ArgumentParser, ConfigError, die

PROG = "python -m workloads.llm.generate"


@torch.no_grad()
def generate(model, ids: list[int], max_new_tokens: int, eos_id: int | None = None,
             greedy: bool = True, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0) -> list[int]:
    """The new token ids (stopping after ``eos_id``, which is included)."""
    gen = torch.Generator().manual_seed(seed)
    seq_len = model.cfg.seq_len
    ctx = list(ids)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ctx[-seq_len:]]))[0, -1].float()
        if greedy:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        out.append(nxt)
        ctx.append(nxt)
        if nxt == eos_id:
            break
    return out


def load_model(checkpoint: str, step: int | None = None):
    """(Llama in eval mode with the checkpoint's fp32 weights, tokenizer, Loaded)."""
    from workloads.llm.export import load_checkpoint
    from workloads.llm.model import Llama

    ld = load_checkpoint(checkpoint, step)
    if ld.tokenizer is None:
        raise ConfigError("--checkpoint", f"{checkpoint} has no tokenizer.json (model.json says "
                                          f"{ld.meta.get('tokenizer')!r})")
    model = Llama(ld.cfg)
    missing, unexpected = model.load_state_dict(ld.weights, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ConfigError("--checkpoint", f"weights do not fit the model: missing {missing}, "
                                          f"unexpected {unexpected}")
    return model.eval(), ld.tokenizer, ld


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog=PROG, description="Print a continuation of --prompt from a "
                       "trainyard checkpoint (our model code, no KV cache).")
    p.add_argument("--checkpoint", required=True, help="training --checkpoint-dir (dir or s3://)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="arg-max decoding (default: sample)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest complete)")
    p.add_argument("--json", action="store_true", help="print ids and text as one JSON line")
    args = p.parse_args(argv)
    try:
        if args.max_new_tokens < 1:
            raise ConfigError("--max-new-tokens", f"must be >= 1, got {args.max_new_tokens}")
        if args.temperature <= 0:
            raise ConfigError("--temperature", f"must be > 0, got {args.temperature} "
                                               "(use --greedy for arg-max)")
        if args.top_k < 0:
            raise ConfigError("--top-k", f"must be >= 0, got {args.top_k}")
        if args.checkpoint.startswith("s3://"):
            from workloads.common.s3 import check_access

            check_access(args.checkpoint, "--checkpoint")
        model, tok, _ = load_model(args.checkpoint, args.step)
        prompt = tok.encode_prompt(args.prompt)
        if not prompt:
            raise ConfigError("--prompt", "encodes to no tokens (this tokenizer has no BOS)")
    except ConfigError as e:
        die(f"{PROG}: error: {e}")
    torch.manual_seed(args.seed)
    new = generate(model, prompt, args.max_new_tokens, tok.eos_id, args.greedy,
                   args.temperature, args.top_k, args.seed)
    text = tok.decode(new)
    if args.json:
        print(json.dumps({"prompt_ids": prompt, "new_ids": new, "text": text}))
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
