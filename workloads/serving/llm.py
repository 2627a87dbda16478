"""Batched greedy generation over a Hugging Face Llama export (the model half of the LLM server).

``LlamaGenerator(model_dir)`` loads ``config.json`` + ``model.safetensors`` with
``LlamaForCausalLM`` and the tokenizer files with ``AutoTokenizer`` (what ``python -m
workloads.llm.export`` writes, and any HF Llama directory). ``generate(requests)`` runs one
``generate`` call for the whole batch: prompts are tokenized as the tokenizer defines (BOS where
it adds one), left-padded with an attention mask (so every row's next token sits in the last
column and positions come from the mask), decoded greedily, and split back per request. Each row
stops at its own ``max_new_tokens``, or at the end-of-text token unless ``ignore_eos``; rows that
finish early idle (their outputs are discarded) until the batch's last row is done.

    python -c "from workloads.serving.llm import LlamaGenerator, GenRequest as R; \
g = LlamaGenerator('out/export'); print(g.generate([R('Once upon', 16)])[0].text)"
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GenRequest:
    """One prompt to complete."""

    prompt: str
    """Text to continue."""
    max_new_tokens: int
    """Upper bound on generated tokens."""
    ignore_eos: bool = False
    """Keep generating past the end-of-text token (benchmarks: a fixed number of tokens)."""


@dataclass(frozen=True)
class GenResult:
    """What one request generated."""

    token_ids: list[int]
    """Generated ids, without the prompt and without the end-of-text token."""
    text: str
    """``token_ids`` decoded."""
    prompt_tokens: int
    """Prompt length in tokens (BOS included where the tokenizer adds it)."""
    finish_reason: str
    """"stop" (end-of-text) or "length" (``max_new_tokens`` reached)."""


def _stop_ids(model, tokenizer) -> set[int]:
    """End-of-text ids: the generation config's, else the model config's, else the tokenizer's."""
    for eos in (getattr(model.generation_config, "eos_token_id", None),
                getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
        if eos is not None:
            return set(eos) if isinstance(eos, list | tuple) else {int(eos)}
    return set()


class LlamaGenerator:
    """A loaded Llama export that completes batches of prompts greedily on CPU (or ``device``)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: no config.json (expected a Hugging Face Llama export, "
                             "as python -m workloads.llm.export writes)")
        import torch
        from transformers import AutoTokenizer, LlamaForCausalLM

        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).to(self.device)
        self.model.eval()
        self.stop_ids = _stop_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        # Pad positions are masked out, so any id works; prefer the tokenizer's own.
        self.pad_id = int(pad if pad is not None else min(self.stop_ids, default=0))
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def check(self, request: GenRequest) -> None:
        """ValueError (one line) when ``request`` cannot run; the server calls this before the
        request joins a batch, so one bad prompt never fails the others in its batch."""
        n = len(self.encode(request.prompt))
        if n == 0:
            raise ValueError("prompt: empty after tokenization")
        if self.max_positions and n + request.max_new_tokens > self.max_positions:
            raise ValueError(f"prompt ({n} tokens) + max_new_tokens ({request.max_new_tokens}) "
                             f"exceeds the model's context of {self.max_positions}")

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Complete every request in one batched ``generate``; results in request order."""
        torch = self.torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        for r in requests:
            self.check(r)
        prompts = [self.encode(r.prompt) for r in requests]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        limits = torch.tensor([r.max_new_tokens for r in requests])
        honour_eos = torch.tensor([not r.ignore_eos for r in requests])
        stop = torch.tensor(sorted(self.stop_ids) or [-1])

        class _PerRow(StoppingCriteria):  # per-row limits and per-row EOS handling
            def __call__(self, ids, scores, **kw):
                done = (ids.shape[1] - width) >= limits
                return done | (honour_eos & torch.isin(ids[:, -1], stop))

        config = copy.deepcopy(self.model.generation_config)
        config.do_sample, config.num_beams = False, 1
        config.temperature = config.top_p = config.top_k = None
        config.eos_token_id = None  # EOS is the stopping criterion's business (ignore_eos)
        config.pad_token_id = self.pad_id
        config.max_new_tokens = int(limits.max())
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device),
                                      attention_mask=mask.to(self.device),
                                      generation_config=config,
                                      stopping_criteria=StoppingCriteriaList([_PerRow()]))
        results = []
        for i, r in enumerate(requests):
            new = out[i, width:width + r.max_new_tokens].tolist()
            reason = "length"
            if not r.ignore_eos:
                cut = next((j for j, t in enumerate(new) if t in self.stop_ids), None)
                if cut is not None:
                    new, reason = new[:cut], "stop"
            results.append(GenResult(new, self.tokenizer.decode(new, skip_special_tokens=True),
                                     len(prompts[i]), reason))
        return results
