"""The text tokenizer of the T5 encoder: a local Hugging Face tokenizer folder plus the official text cleaning.

Same class name, arguments and cleaning rules as the official ``wan/modules/tokenizers.py``; outputs are numpy
int64 arrays instead of torch tensors. Only local folders are accepted: nothing is downloaded.
"""
from __future__ import annotations

import html
import os
import string

import numpy as np
import regex as re  # the official cleaning uses `regex`, whose \s differs from `re`'s on a few control chars

__all__ = ["HuggingfaceTokenizer", "basic_clean", "whitespace_clean", "canonicalize"]

CLEAN_MODES = (None, "whitespace", "lower", "canonicalize")
# Files one of which a Hugging Face tokenizer folder has (fast tokenizer, SentencePiece model, or config).
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


def basic_clean(text: str) -> str:
    """Repair mojibake with ftfy, undo (double) HTML escaping, strip the ends."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    """Collapse every whitespace run to one space and strip the ends."""
    return re.sub(r"\s+", " ", text).strip()


def canonicalize(text: str, keep_punctuation_exact_string=None) -> str:
    """Underscores to spaces, ASCII punctuation removed (except around the given exact string), lower case."""
    text = text.replace("_", " ")
    drop = str.maketrans("", "", string.punctuation)
    if keep_punctuation_exact_string:
        text = keep_punctuation_exact_string.join(
            part.translate(drop) for part in text.split(keep_punctuation_exact_string))
    else:
        text = text.translate(drop)
    text = text.lower()
    return re.sub(r"\s+", " ", text).strip()


def _check_folder(name) -> str:
    if name is None:
        raise ValueError("tokenizer path is None: pass the tokenizer folder shipped with the checkpoint "
                         "(<checkpoint_dir>/google/umt5-xxl)")
    path = os.fspath(name)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer folder not found: {path!r}; pass the tokenizer folder shipped with the "
                                "checkpoint (<checkpoint_dir>/google/umt5-xxl), which holds tokenizer.json / "
                                "spiece.model and tokenizer_config.json")
    if not any(os.path.isfile(os.path.join(path, f)) for f in _TOKENIZER_FILES):
        raise ValueError(f"{path!r} is not a tokenizer folder: it has none of {list(_TOKENIZER_FILES)}; pass the "
                         "folder shipped with the checkpoint (<checkpoint_dir>/google/umt5-xxl)")
    return path


class HuggingfaceTokenizer:
    """Tokenize prompts with a local Hugging Face tokenizer, after the official cleaning.

    Args:
        name: the tokenizer folder (e.g. ``<checkpoint_dir>/google/umt5-xxl``).
        seq_len: pad and truncate every sequence to this many tokens; None keeps natural lengths.
        clean: None, "whitespace", "lower" or "canonicalize" (the T5 encoder uses "whitespace").
        **kwargs: passed to ``AutoTokenizer.from_pretrained``.
    """

    def __init__(self, name, seq_len=None, clean=None, **kwargs):
        if clean not in CLEAN_MODES:
            raise ValueError(f"clean={clean!r}: expected one of {CLEAN_MODES}")
        if seq_len is not None and (not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1):
            raise ValueError(f"seq_len={seq_len!r}: pass a positive int or None")
        path = _check_folder(name)
        self.name = path
        self.seq_len = seq_len
        self.clean = clean

        from transformers import AutoTokenizer  # lazy: importing transformers takes seconds

        kwargs.setdefault("local_files_only", True)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        except Exception as err:  # transformers raises OSError/ValueError/KeyError/... for broken folders
            raise ValueError(f"{path!r}: transformers could not load a tokenizer from this folder "
                             f"({type(err).__name__}: {err}); pass the folder shipped with the checkpoint "
                             "(<checkpoint_dir>/google/umt5-xxl)") from err
        if isinstance(self.tokenizer, bool) or not callable(self.tokenizer):
            raise ValueError(f"{path!r}: AutoTokenizer returned {type(self.tokenizer).__name__}, not a tokenizer")
        self.vocab_size = self.tokenizer.vocab_size

    def __call__(self, sequence, **kwargs):
        """sequence: a string or a list of strings.

        Returns:
            ids int64 [B, L] (L = seq_len when set), or (ids, mask) with ``return_mask=True``; mask is int64
            [B, L] with 1 for real tokens.
        """
        return_mask = kwargs.pop("return_mask", False)
        _kwargs = {"return_tensors": "np"}
        if self.seq_len is not None:
            _kwargs.update({"padding": "max_length", "truncation": True, "max_length": self.seq_len})
        _kwargs.update(**kwargs)
        if isinstance(sequence, str):
            sequence = [sequence]
        if self.clean:
            sequence = [self._clean(u) for u in sequence]
        enc = self.tokenizer(sequence, **_kwargs)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        if return_mask:
            return ids, np.asarray(enc["attention_mask"], dtype=np.int64)
        return ids

    def _clean(self, text: str) -> str:
        if self.clean == "whitespace":
            return whitespace_clean(basic_clean(text))
        if self.clean == "lower":
            return whitespace_clean(basic_clean(text)).lower()
        if self.clean == "canonicalize":
            return canonicalize(basic_clean(text))
        return text
