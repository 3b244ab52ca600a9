"""The small world's own text vocabulary, as a CLIP byte-pair encoding.

Stable Diffusion's tokenizer is a ``CLIPTokenizer`` (BPE with a ``</w>`` end-of-word mark).
The small world uses the same class with a vocabulary learned here from the world's words:
every word that a caption template or synonym can produce becomes one token, and any other
lower-case ASCII word still tokenizes (into smaller pieces, down to single characters), so a
prompt outside the world never fails. Building it is deterministic (ties broken by the pair).
"""

from __future__ import annotations

import itertools
import re
import string
from collections import Counter

from gate.world import concepts as C

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# characters always in the vocabulary (byte-level BPE maps printable ASCII to itself)
BASE_CHARS = string.ascii_lowercase + string.digits + "'-.,!?&"


def world_words() -> list[str]:
    """Every word the world's captions can contain, sorted."""
    texts: list[str] = []
    for table in (C.SHAPES, C.COLORS, C.TEXTURES, C.IDENTITIES, C.UNSAFE):
        for syns in table.values():
            texts.extend(syns)
    texts += list(C.SHAPE_ADJECTIVES.values()) + list(C.SOLID_WORDS)
    for group in (
        C.SHAPE_TEMPLATES_TRAIN, C.SHAPE_TEMPLATES_HELDOUT, C.TEXTURE_TEMPLATES_TRAIN,
        C.TEXTURE_TEMPLATES_HELDOUT, C.SOLID_TEMPLATES_TRAIN, C.NAMED_TEMPLATES_TRAIN,
        C.NAMED_TEMPLATES_HELDOUT, C.UNSAFE_TEMPLATES_TRAIN, C.UNSAFE_TEMPLATES_HELDOUT,
        C.PAIR_TEMPLATES,
    ):  # fmt: skip
        texts.extend(re.sub(r"\{\w\}", " ", t) for t in group)
    # words a user of the demo is likely to type, and the empty-ish prompts of erasure methods
    texts += ["an", "shape", "object", "thing", "background", "nothing", "empty", "person", "scene"]
    words = {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}
    return sorted(words)


def build_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learns merges until every word is one token. Returns (vocab, merges)."""
    seqs: dict[str, list[str]] = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seq in seqs.values():
            for a, b in itertools.pairwise(seq):
                pairs[(a, b)] += 1
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], [-ord(ch) for ch in kv[0][0] + "|" + kv[0][1]]))[0]
        merges.append(best)
        joined = best[0] + best[1]
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    tokens: list[str] = []
    for ch in BASE_CHARS:
        tokens += [ch, ch + "</w>"]
    for a, b in merges:
        tokens.append(a + b)
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def make_tokenizer(max_length: int):  # -> transformers.CLIPTokenizer (lazy import)
    from transformers import CLIPTokenizer

    vocab, merges = build_bpe(world_words())
    tok = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=max_length,
    )
    return tok
