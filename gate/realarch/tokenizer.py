"""CLIP's real BPE tokenizer (49408 tokens), built offline from the BPE merges file that open_clip
ships (``open_clip/bpe_simple_vocab_16e6.txt.gz``), in the files a diffusers ``tokenizer/``
folder holds: ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``.

The vocabulary is built as CLIP builds it: the 256 byte-level unicode characters, the same with
``</w>``, one token per merge (the first 49152 - 256 - 2 merges after the header line), then
``<|startoftext|>`` and ``<|endoftext|>``.

Trap (transformers 5.x): ``CLIPTokenizer(vocab_file=..., merges_file=...)`` ignores both files
and yields a 2-token vocabulary; load the folder with ``CLIPTokenizer.from_pretrained``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

VOCAB_SIZE = 49408
N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bpe_file() -> Path:
    from importlib.util import find_spec

    spec = find_spec("open_clip")  # found, not imported (importing open_clip takes seconds)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("open_clip is not installed; its BPE merges file builds the CLIP tokenizer")
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: open_clip's BPE merges file is missing")
    return path


def byte_unicode() -> list[str]:
    """CLIP/GPT-2's byte -> printable-unicode table, in CLIP's vocabulary order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return [chr(c) for c in chars]


def merges() -> list[tuple[str, str]]:
    with gzip.open(bpe_file()) as f:
        lines = f.read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    out = [tuple(line.split()) for line in lines]
    if len(out) != N_MERGES or any(len(m) != 2 for m in out):
        raise ValueError(f"{bpe_file()}: expected {N_MERGES} merges of two symbols")
    return out  # type: ignore[return-value]


def vocabulary(pairs: list[tuple[str, str]]) -> dict[str, int]:
    base = byte_unicode()
    tokens = [*base, *(c + "</w>" for c in base), *("".join(m) for m in pairs), BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"CLIP vocabulary: {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab


def write_tokenizer(folder: Path, config: dict[str, Any]) -> Path:
    """Writes a CLIPTokenizer folder (``config``: the tokenizer_config.json settings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = merges()
    (folder / "vocab.json").write_text(json.dumps(vocabulary(pairs), ensure_ascii=False), encoding="utf-8")
    text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in pairs)
    (folder / "merges.txt").write_text(text, encoding="utf-8")
    special = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "CLIPTokenizer"}, indent=2))
    return folder


def load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    if len(tok) != VOCAB_SIZE:
        raise ValueError(f"{folder}: tokenizer has {len(tok)} tokens, expected {VOCAB_SIZE}")
    return tok
