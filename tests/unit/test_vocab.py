"""The world's CLIPTokenizer vocabulary: built deterministically, saved and reloaded in the real format."""

from __future__ import annotations

from transformers import CLIPTokenizer

from gate.world.vocab import build_bpe, make_tokenizer, world_words


def test_vocab_is_deterministic():
    assert build_bpe(world_words()) == build_bpe(world_words())


def test_every_world_word_is_one_token():
    tok = make_tokenizer(20)
    for w in world_words():
        assert tok.tokenize(w) == [w + "</w>"], w


def test_unknown_words_still_tokenize():
    tok = make_tokenizer(20)
    pieces = tok.tokenize("xylophone")
    assert len(pieces) > 1 and "".join(pieces).replace("</w>", "") == "xylophone"


def test_round_trip_through_save_pretrained(tmp_path):
    tok = make_tokenizer(20)
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    text = "a crimson disc beside zorb the alien"
    assert again(text).input_ids == tok(text).input_ids
    assert again.model_max_length == 20
    padded = again(text, padding="max_length", max_length=20).input_ids
    assert len(padded) == 20 and padded[-1] == again.pad_token_id
