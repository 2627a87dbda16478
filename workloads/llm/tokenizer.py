"""Tokenizers for the LLM workload: a byte-level BPE trained on the corpus, or plain bytes.

Both are ``tokenizers`` (Hugging Face) objects saved as one ``tokenizer.json`` that
``transformers``' ``PreTrainedTokenizerFast`` / ``AutoTokenizer`` load unchanged:

- **bpe**: byte-level BPE (GPT-2 / Llama 3 style: every byte has a token, so any text encodes
  without an unknown token), trained by ``prepare`` with ``--vocab-size`` ids, the first two
  being ``<|begin_of_text|>`` (0) and ``<|end_of_text|>`` (1). A post-processor prepends BOS, as
  Llama's tokenizer does; ``prepare`` writes every document as BOS + text + EOS.
- **byte**: UTF-8 bytes are the ids (vocab 256, no merges, no special tokens); NUL (id 0) ends
  each document. Its ``tokenizer.json`` is the same byte-level model with an identity vocabulary,
  so an export of a byte-tokenizer model is as loadable as a BPE one.

An existing ``tokenizer.json`` (``prepare --tokenizer PATH``) works when it names an
end-of-text token (``EOS_NAMES``); its BOS, if any, is found by ``BOS_NAMES``.

    python -c "from workloads.llm.tokenizer import load; t = load('out/data/x'); print(t.encode('hi'))"
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
BOS_NAMES = (BOS, "<s>", "<|startoftext|>", "<bos>")
EOS_NAMES = (EOS, "</s>", "<|endoftext|>", "<eos>", "<|eot_id|>")
FILE = "tokenizer.json"
KINDS = ("byte", "bpe")


def _byte_table() -> list[str]:
    """GPT-2's reversible byte -> character table, the one ByteLevel pre-tokenizes to: printable
    bytes map to themselves, the rest to U+0100 onwards in byte order (a test checks it against
    the ``tokenizers`` library)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


@dataclass
class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus what training and export need to know about it."""

    kind: str
    """"byte" or "bpe" (an existing tokenizer.json counts as bpe)."""
    hf: object
    """The ``tokenizers.Tokenizer``."""
    bos_id: int | None
    """Prepended to every document and prompt (None: the tokenizer has none, e.g. byte)."""
    eos_id: int
    """Appended to every document; generation stops on it."""

    @property
    def vocab_size(self) -> int:
        return 256 if self.kind == "byte" else int(self.hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        if self.kind == "byte":
            return list(text.encode("utf-8"))
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "byte":
            return [list(t.encode("utf-8")) for t in texts]
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def encode_prompt(self, text: str) -> list[int]:
        """What a model sees at a document start: BOS (if any) then the text's ids."""
        return ([self.bos_id] if self.bos_id is not None else []) + self.encode(text)

    def document(self, ids: list[int]) -> list[int]:
        """A document as written to the shards: [BOS] + ids + [EOS]."""
        return ([self.bos_id] if self.bos_id is not None else []) + ids + [self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        if self.kind == "byte":
            return bytes(ids).decode("utf-8", errors="replace")
        return self.hf.decode(ids, skip_special_tokens=True)

    def to_json(self) -> str:
        return self.hf.to_str(pretty=True)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / FILE
        path.write_text(self.to_json())
        return path

    def hf_files(self, model_max_length: int) -> dict[str, str]:
        """tokenizer.json, tokenizer_config.json and special_tokens_map.json for an export."""
        special = {}
        if self.kind != "byte":  # byte: NUL is an ordinary byte, not a special token
            if self.bos_id is not None:
                special["bos_token"] = self.hf.id_to_token(self.bos_id)
            special["eos_token"] = self.hf.id_to_token(self.eos_id)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                  "clean_up_tokenization_spaces": False, **special}
        if self.kind != "byte":
            config["add_bos_token"] = self.bos_id is not None
            config["add_eos_token"] = False
        return {FILE: self.to_json(), "tokenizer_config.json": json.dumps(config, indent=1),
                "special_tokens_map.json": json.dumps(special, indent=1)}


def byte_tokenizer() -> Tokenizer:
    """The byte tokenizer: id = UTF-8 byte, NUL ends a document."""
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in enumerate(_byte_table())}
    hf = HF(models.BPE(vocab=vocab, merges=[]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.decoder = decoders.ByteLevel()
    return Tokenizer("byte", hf, bos_id=None, eos_id=0)


def train_bpe(texts: Iterator[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE with ``vocab_size`` ids (BOS 0, EOS 1, the 256 byte tokens, merges)."""
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    hf = HF(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator(texts, trainer)
    hf.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)])
    return Tokenizer("bpe", hf, bos_id=0, eos_id=1)


def from_file(path: Path) -> Tokenizer:
    """An existing tokenizer.json; ValueError (one line) when unreadable or without an EOS."""
    from tokenizers import Tokenizer as HF

    try:
        hf = HF.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise ValueError(f"{path}: not a tokenizers tokenizer.json ({str(e).splitlines()[0]})"
                         ) from None
    if _is_byte(hf):
        return Tokenizer("byte", hf, None, 0)
    vocab = hf.get_vocab(with_added_tokens=True)
    eos = next((vocab[n] for n in EOS_NAMES if n in vocab), None)
    if eos is None:
        raise ValueError(f"{path}: no end-of-text token (one of {', '.join(EOS_NAMES)}); "
                         "documents need a separator")
    bos = next((vocab[n] for n in BOS_NAMES if n in vocab), None)
    if bos == eos:
        bos = None
    return Tokenizer("bpe", hf, bos, eos)


def _is_byte(hf) -> bool:
    return hf.get_vocab_size(with_added_tokens=True) == 256 and \
        hf.get_vocab(with_added_tokens=True) == {ch: b for b, ch in enumerate(_byte_table())}


def load(directory: Path, kind: str | None = None) -> Tokenizer:
    """The tokenizer saved in ``directory`` (data, checkpoint root or export); ``kind`` "byte"
    without a tokenizer.json there (data prepared before tokenizer.json existed) is the byte one."""
    path = Path(directory) / FILE
    if path.is_file():
        if kind == "byte":
            return byte_tokenizer()
        return from_file(path)
    if kind in (None, "byte", "bytes"):
        return byte_tokenizer()
    raise ValueError(f"{directory}: no {FILE} (a {kind} tokenizer needs one)")
