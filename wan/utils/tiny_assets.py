"""Small, offline, deterministic stand-ins for the release's assets (tests and the tiny default checkpoint).

Everything here is built from data in this file: no download, no randomness, the same bytes on every run.
"""
from __future__ import annotations

import json
import os
import string

from .fileio import atomic_output

__all__ = ["make_tiny_tokenizer", "TINY_TOKENIZER_MIN_VOCAB"]

# The ids umt5-xxl's tokenizer gives its special tokens; the tiny tokenizer keeps them.
_SPECIALS = ("<pad>", "</s>", "<unk>")
_SPACE = "\u2581"  # SentencePiece's word-boundary marker

# Whole-word pieces, so that ordinary English prompts become a handful of ids instead of one per letter.
_WORDS = (
    "a an the of and in on with at to is are by for from under over near into through while "
    "cat dog bird fish horse man woman girl boy child people person car train boat city street "
    "forest river sea ocean beach mountain sky sun moon night day light rain snow water fire tree "
    "flower grass house room table window red blue green white black yellow small big old young "
    "walking running flying sitting standing playing dancing swimming looking camera video shot "
    "close up slow motion style cinematic realistic painting photo scene background quality low "
    "high best worst detailed blurry static bright dark"
).split()

# The characters of the official default negative prompt, so the Chinese prompt maps to real ids rather
# than a run of <unk>.
_CJK = (
    "色调艳丽过曝静态细节模糊不清字幕风格作品画作面止整体发灰最差质量低压缩残留丑陋的缺多余手指得好部脸"
    "畸形毁容肢融合动杂乱背景三条腿人很倒着走"
)

# specials + the boundary marker + every printable ASCII character except the space: any ASCII text then
# tokenizes without <unk>.
TINY_TOKENIZER_MIN_VOCAB = len(_SPECIALS) + 1 + len(string.printable.strip())


def _pieces():
    """The candidate pieces in id order with their Unigram log-probabilities.

    Longer pieces get higher scores so the Viterbi segmentation prefers whole words to letters.
    """
    out = [(tok, 0.0) for tok in _SPECIALS]
    out.append((_SPACE, -3.0))
    seen = {p for p, _ in out}

    def add(piece, score):
        if piece not in seen:
            seen.add(piece)
            out.append((piece, score))

    for i, ch in enumerate(string.printable.strip()):
        add(ch, -10.0 - 0.001 * i)
    for i, word in enumerate(_WORDS):
        add(_SPACE + word, -4.0 - 0.001 * i)
    for i, ch in enumerate(_CJK):
        add(ch, -8.0 - 0.001 * i)
    letters = string.ascii_lowercase
    for i, (a, b) in enumerate((a, b) for a in letters for b in letters):
        add(a + b, -7.0 - 0.0001 * i)
    for i, (a, b) in enumerate((a, b) for a in letters for b in letters):
        add(_SPACE + a + b, -6.5 - 0.0001 * i)
    return out


def _write_atomic(path: str, text: str) -> None:
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def make_tiny_tokenizer(dst_dir: str, vocab_size: int = 512, model_max_length: int = 512) -> str:
    """Write a small umt5-style tokenizer folder loadable with ``AutoTokenizer.from_pretrained(dst_dir)``.

    Same family as ``google/umt5-xxl``: a SentencePiece-style Unigram model (``T5Tokenizer`` /
    ``T5TokenizerFast``) with ``<pad>`` = 0, ``</s>`` = 1 (appended to every sequence), ``<unk>`` = 2, the
    ``▁`` word-boundary marker and no sentinel (extra_id) tokens. The vocabulary is hand-made (ASCII
    characters, a few English words, the characters of the official Chinese negative prompt, letter pairs),
    truncated to ``vocab_size`` pieces, so the files are byte-identical on every run.

    Args:
        dst_dir: folder to create or overwrite the tokenizer files in.
        vocab_size: number of pieces, at least ``TINY_TOKENIZER_MIN_VOCAB`` (specials + ASCII) and at most the
            number of candidate pieces this module knows.
        model_max_length: recorded in tokenizer_config.json (the official encoder uses text_len 512).
    Returns:
        ``dst_dir``.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    pieces = _pieces()
    if not isinstance(vocab_size, int) or not TINY_TOKENIZER_MIN_VOCAB <= vocab_size <= len(pieces):
        raise ValueError(f"vocab_size={vocab_size!r} is out of range: pass an int between "
                         f"{TINY_TOKENIZER_MIN_VOCAB} (special tokens + printable ASCII) and {len(pieces)}")
    pieces = pieces[:vocab_size]

    tok = Tokenizer(Unigram(pieces, unk_id=_SPECIALS.index("<unk>"), byte_fallback=False))
    # No normalizer and this exact pre-tokenizer: transformers 5 rebuilds a T5 tokenizer's pipeline this way
    # (dropping anything else in tokenizer.json) while transformers 4 reads tokenizer.json as written, so this
    # choice gives the same ids under both.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)])
    tok.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", _SPECIALS.index("</s>"))])
    tok.add_special_tokens(list(_SPECIALS))

    config = {
        "tokenizer_class": "T5Tokenizer",
        "model_max_length": int(model_max_length),
        "pad_token": "<pad>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "extra_ids": 0,
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": False,
    }
    special_map = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}

    os.makedirs(dst_dir, exist_ok=True)
    _write_atomic(os.path.join(dst_dir, "tokenizer.json"), tok.to_str(pretty=True) + "\n")
    _write_atomic(os.path.join(dst_dir, "tokenizer_config.json"), json.dumps(config, indent=2, sort_keys=True) + "\n")
    _write_atomic(os.path.join(dst_dir, "special_tokens_map.json"),
                  json.dumps(special_map, indent=2, sort_keys=True) + "\n")
    return dst_dir
