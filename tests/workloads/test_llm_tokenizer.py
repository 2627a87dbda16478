"""The LLM tokenizers: byte-level BPE and bytes, and their Hugging Face files.

The transformers checks load the files ``Tokenizer.hf_files`` writes with ``AutoTokenizer``
(an implementation we did not write) and compare ids and text with ours.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import pytest

from workloads.llm import tokenizer as tk

TEXT = "def f(x):\n    return x * 2  # héllo, wörld: ∑ 𝔘 🚀\n\tдругой текст 中文\x00end"
CORPUS = [Path(m.__file__).read_text() for m in (argparse, json, textwrap)]  # ~150 KB of text


@pytest.fixture(scope="module")
def bpe():
    return tk.train_bpe(iter(CORPUS), vocab_size=400)


def test_byte_table_is_the_tokenizers_byte_level_alphabet():
    from tokenizers import pre_tokenizers

    table = tk._byte_table()
    assert len(set(table)) == 256
    assert set(table) == set(pre_tokenizers.ByteLevel.alphabet())


def test_byte_tokenizer_ids_are_utf8_bytes_both_ways():
    t = tk.byte_tokenizer()
    ids = t.encode(TEXT)
    assert ids == list(TEXT.encode("utf-8"))
    assert t.hf.encode(TEXT, add_special_tokens=False).ids == ids  # the saved form agrees
    assert t.decode(ids) == TEXT and t.hf.decode(ids) == TEXT
    assert t.vocab_size == 256 and t.eos_id == 0 and t.bos_id is None
    assert t.document([65]) == [65, 0]


def test_bpe_has_specials_first_and_round_trips_any_text(bpe):
    assert bpe.kind == "bpe" and bpe.vocab_size == 400
    assert (bpe.bos_id, bpe.eos_id) == (0, 1)
    assert bpe.hf.id_to_token(0) == tk.BOS and bpe.hf.id_to_token(1) == tk.EOS
    ids = bpe.encode(TEXT)
    assert bpe.decode(ids) == TEXT
    assert len(bpe.encode(CORPUS[0])) < len(CORPUS[0].encode()) / 2  # merges were learned
    assert bpe.encode_prompt("hi") == [0, *bpe.encode("hi")]
    assert bpe.document([5]) == [0, 5, 1]


def test_saved_file_loads_back(tmp_path, bpe):
    bpe.save(tmp_path)
    again = tk.load(tmp_path)
    assert (again.kind, again.bos_id, again.eos_id) == ("bpe", 0, 1)
    assert again.encode(TEXT) == bpe.encode(TEXT)
    (tmp_path / "b").mkdir()
    tk.byte_tokenizer().save(tmp_path / "b")
    assert tk.load(tmp_path / "b").kind == "byte"
    assert tk.load(tmp_path / "nothing-here", "byte").kind == "byte"
    with pytest.raises(ValueError, match="no tokenizer.json"):
        tk.load(tmp_path / "nothing-here", "bpe")


def test_from_file_refuses_garbage_and_a_tokenizer_without_eos(tmp_path):
    from tokenizers import Tokenizer, models

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizers tokenizer.json"):
        tk.from_file(bad)
    no_eos = tmp_path / "noeos.json"
    Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")).save(str(no_eos))
    with pytest.raises(ValueError, match="no end-of-text token"):
        tk.from_file(no_eos)


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_transformers_loads_the_export_files_and_agrees(tmp_path, bpe, kind):
    from transformers import AutoTokenizer

    ours = bpe if kind == "bpe" else tk.byte_tokenizer()
    for name, text in ours.hf_files(model_max_length=128).items():
        (tmp_path / name).write_text(text)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = hf(TEXT)["input_ids"]
    assert ids == ours.encode_prompt(TEXT)
    assert hf.decode(ids, skip_special_tokens=True) == TEXT
    assert hf.model_max_length == 128
    if kind == "bpe":
        assert (hf.bos_token_id, hf.eos_token_id) == (0, 1)
    else:  # NUL stays an ordinary byte: no special token would swallow U+0100 in text
        special = json.loads((tmp_path / "special_tokens_map.json").read_text())
        assert special == {} and hf("Ā")["input_ids"] == list("Ā".encode())
