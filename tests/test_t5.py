"""UMT5 text encoder and tokenizer: parity with the official PyTorch code (fixtures from make_t5_fixtures.py)."""
import filecmp
import os
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from conftest import FIXTURES
from wan.modules import t5 as t5_mod
from wan.modules.t5 import T5Encoder, T5EncoderModel, relative_position_bucket
from wan.modules.tokenizers import HuggingfaceTokenizer

sys.path.insert(0, FIXTURES)
from tiny_tokenizer import TINY_TOKENIZER_MIN_VOCAB, make_tiny_tokenizer  # noqa: E402

FIX = os.path.join(FIXTURES, "t5")
TOKENIZER_DIR = os.path.join(FIX, "tokenizer")
PTH = os.path.join(FIX, "umt5_tiny.pth")
# The tiny umT5 of the fixtures, in T5Encoder's argument names.
TINY = dict(vocab=512, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2, num_buckets=32,
            shared_pos=False)


def _texts(arr):
    return [bytes(t).decode("utf-8") for t in arr]


def _load_with_reader(cell, path):
    """Copy every tensor of the checkpoint into the parameter of the same name; the key sets must be equal."""
    from wan.checkpoint import open_checkpoint

    reader = open_checkpoint(path)
    params = dict(cell.parameters_and_names())
    assert sorted(params) == sorted(reader.keys())
    for name, p in params.items():
        value = reader.read(name).astype(np.float32)
        assert tuple(p.shape) == value.shape, name
        p.set_data(Tensor(value, p.dtype))


def _max_rel_err(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


# ------------------------------------------------------------------------------------------- position buckets

def test_relative_position_bucket_matches_official_for_every_distance():
    ref = np.load(os.path.join(FIX, "buckets.npz"))
    rel = ref["rel"]
    np.testing.assert_array_equal(relative_position_bucket(rel, 32, bidirectional=True), ref["bidirectional"])
    np.testing.assert_array_equal(relative_position_bucket(rel, 32, bidirectional=False), ref["unidirectional"])


# ----------------------------------------------------------------------------------------------------- encoder

def test_parameter_names_are_the_official_checkpoint_keys():
    from wan.checkpoint import open_checkpoint

    model = T5Encoder(**TINY)
    names = sorted(n for n, _ in model.parameters_and_names())
    keys = sorted(open_checkpoint(PTH).keys())
    assert names == keys
    assert "blocks.0.pos_embedding.embedding.weight" in names and "blocks.1.ffn.gate.0.weight" in names


def test_full_size_umt5_xxl_names_and_shapes_match_the_official_encoder():
    import json

    with open(os.path.join(FIX, "umt5_xxl_manifest.json")) as f:
        official = {k: tuple(v) for k, v in json.load(f).items()}
    # Built without initialising (no memory for the 5.68 B values): names and shapes only.
    with nn.no_init_parameters():
        model = T5Encoder(**t5_mod.umt5_xxl_config(), dtype=ms.bfloat16)
    ours = {n: tuple(p.shape) for n, p in model.parameters_and_names()}
    assert ours == official
    assert len(ours) == 242 and sum(int(np.prod(s)) for s in ours.values()) == 5_680_910_336


def test_umt5_encoder_matches_official_on_a_ragged_batch():
    ref = np.load(os.path.join(FIX, "encoder.npz"))
    model = T5Encoder(**TINY)
    model.set_train(False)
    _load_with_reader(model, PTH)
    out = model(Tensor(ref["ids"].astype(np.int32)), Tensor(ref["mask"].astype(np.int32))).asnumpy()
    assert out.shape == ref["hidden"].shape == (2, 20, 32)
    # padded rows of the short sample included: the official code computes them the same way
    assert _max_rel_err(out, ref["hidden"]) < 2e-6
    np.testing.assert_allclose(out, ref["hidden"], rtol=1e-5, atol=2e-5)


def test_mask_changes_the_output_of_real_tokens():
    # Guard against a mask that is silently ignored: unmasking the padding must move the short sample.
    ref = np.load(os.path.join(FIX, "encoder.npz"))
    model = T5Encoder(**TINY)
    _load_with_reader(model, PTH)
    ids = Tensor(ref["ids"].astype(np.int32))
    out = model(ids, Tensor(np.ones_like(ref["mask"], dtype=np.int32))).asnumpy()
    assert np.abs(out[1, :7] - ref["hidden"][1, :7]).max() > 1e-3


def test_shared_position_bias_encoder_matches_official():
    ref = np.load(os.path.join(FIX, "shared_pos.npz"))
    model = T5Encoder(vocab=64, dim=24, dim_attn=32, dim_ffn=40, num_heads=2, num_layers=2, num_buckets=16,
                      shared_pos=True)
    params = dict(model.parameters_and_names())
    weights = {k[2:]: ref[k] for k in ref.files if k.startswith("w/")}
    assert sorted(params) == sorted(weights)
    for name, p in params.items():
        p.set_data(Tensor(weights[name].astype(np.float32)))
    out = model(Tensor(ref["ids"].astype(np.int32)), Tensor(ref["mask"].astype(np.int32))).asnumpy()
    np.testing.assert_allclose(out, ref["hidden"], rtol=1e-5, atol=2e-5)


# --------------------------------------------------------------------------------------------------- tokenizer

def test_make_tiny_tokenizer_is_deterministic_and_matches_the_committed_folder(tmp_path):
    dst = make_tiny_tokenizer(str(tmp_path / "tok"), vocab_size=512)
    names = sorted(os.listdir(TOKENIZER_DIR))
    assert sorted(os.listdir(dst)) == names == ["special_tokens_map.json", "tokenizer.json",
                                                 "tokenizer_config.json"]
    for name in names:
        assert filecmp.cmp(os.path.join(dst, name), os.path.join(TOKENIZER_DIR, name), shallow=False), name


def test_tiny_tokenizer_has_the_umt5_special_ids():
    tok = HuggingfaceTokenizer(TOKENIZER_DIR)
    hf = tok.tokenizer
    assert (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2)
    assert tok.vocab_size == 512
    ids = tok("a cat")
    assert ids.dtype == np.int64 and ids[0, -1] == 1


def test_tokenizer_gives_the_official_ids():
    ref = np.load(os.path.join(FIX, "tokenizer_ids.npz"))
    texts = _texts(ref["texts"])
    tok = HuggingfaceTokenizer(name=TOKENIZER_DIR, seq_len=24, clean="whitespace")
    ids, mask = tok(texts, return_mask=True, add_special_tokens=True)
    np.testing.assert_array_equal(ids, ref["ids"])
    np.testing.assert_array_equal(mask, ref["mask"])
    raw = HuggingfaceTokenizer(name=TOKENIZER_DIR)
    got = np.concatenate([raw(t)[0] for t in texts])
    np.testing.assert_array_equal(got, ref["raw_ids"])


def test_tokenizer_folder_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        HuggingfaceTokenizer(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a tokenizer folder.*tokenizer.json"):
        HuggingfaceTokenizer(str(empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("this is not json")
    (broken / "tokenizer_config.json").write_text('{"tokenizer_class": "T5Tokenizer"}')
    with pytest.raises(ValueError, match="broken.*could not load a tokenizer"):
        HuggingfaceTokenizer(str(broken))
    with pytest.raises(ValueError, match="clean"):
        HuggingfaceTokenizer(TOKENIZER_DIR, clean="upper")


def test_make_tiny_tokenizer_rejects_bad_vocab_size(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=10"):
        make_tiny_tokenizer(str(tmp_path / "t"), vocab_size=10)
    make_tiny_tokenizer(str(tmp_path / "t"), vocab_size=TINY_TOKENIZER_MIN_VOCAB)


# ----------------------------------------------------------------------------------------------------- wrapper

def _wrapper(**kw):
    args = dict(text_len=20, checkpoint_path=PTH, tokenizer_path=TOKENIZER_DIR,
                config={k: v for k, v in TINY.items()})
    args.update(kw)
    return T5EncoderModel(**args)


def _check_wrapper_outputs(enc, ref):
    texts = _texts(ref["texts"])
    outs = enc(texts)
    assert isinstance(outs, list) and len(outs) == len(texts)
    assert [o.shape[0] for o in outs] == ref["lens"].tolist()
    assert all(o.shape[1] == 32 and o.dtype == ms.float32 for o in outs)
    got = np.concatenate([o.asnumpy() for o in outs])
    np.testing.assert_allclose(got, ref["hidden"], rtol=1e-5, atol=2e-5)


def test_wrapper_tokenize_encode_slice_matches_official():
    ref = np.load(os.path.join(FIX, "wrapper.npz"))
    enc = _wrapper(text_len=int(ref["text_len"]), checkpoint_path=None)
    _load_with_reader(enc.model, PTH)
    _check_wrapper_outputs(enc, ref)


def test_wrapper_loads_the_official_pth_and_matches_official():
    ref = np.load(os.path.join(FIX, "wrapper.npz"))
    _check_wrapper_outputs(_wrapper(text_len=int(ref["text_len"])), ref)


def test_wrapper_bad_inputs():
    enc = _wrapper(checkpoint_path=None)
    with pytest.raises(ValueError, match="empty"):
        enc([])
    with pytest.raises(ValueError, match="list of strings"):
        enc([1, 2])
    with pytest.raises(ValueError, match="text_len"):
        _wrapper(text_len=0)
    with pytest.raises(ValueError, match="bfloat16|Float|CPU"):
        _wrapper(dtype=ms.bfloat16)
    with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
        _wrapper(tokenizer_path="/no_such_tokenizer")
    with pytest.raises(ValueError, match="unknown T5Encoder arguments"):
        _wrapper(config={"layers": 3})
    with pytest.raises(ValueError, match="device='cuda'"):
        _wrapper(checkpoint_path=None, device="cuda")
    with pytest.raises(ValueError, match="tokenizer path is None"):
        _wrapper(tokenizer_path=None)


def test_wrapper_accepts_the_official_call_forms():
    enc = _wrapper(checkpoint_path=None, device="cpu")
    one = enc("a cat", "cpu")  # official __call__(texts, device); a bare string is one prompt
    assert len(one) == 1 and tuple(one[0].shape) == (3, 32)  # "▁a", "▁cat", "</s>"
