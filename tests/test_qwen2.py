"""Qwen2 / Qwen2.5 causal LM: parity with Hugging Face transformers (fixtures from make_qwen_fixtures.py)."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import FIXTURES
from wan.modules.qwen2 import (Qwen2ForCausalLM, choose_next_tokens, decoder_mask, positions_from_mask)

FIX = os.path.join(FIXTURES, "qwen")
MODELS = ("tiny_untied", "tiny_tied")
ATOL = 5e-5  # float32 logits of magnitude ~5-7; measured max differences 7e-6 .. 9e-6


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "expected.npz")))


@pytest.fixture(scope="module")
def models():
    return {name: Qwen2ForCausalLM.from_pretrained(os.path.join(FIX, name)) for name in MODELS}


def _valid_rows(logits, mask):
    return logits[mask.astype(bool)]


# ------------------------------------------------------------------------------------------------ loading

def test_from_pretrained_reads_config_sharding_and_tying(models):
    untied, tied = models["tiny_untied"], models["tiny_tied"]
    assert untied.config.num_key_value_heads == 2 and untied.config.rope_theta == 1e6
    assert untied.lm_head is not None and len(untied.config.eos_token_id) == 1
    assert tied.lm_head is None and tied.config.head_dim == 32 and tied.config.num_key_value_heads == 1
    # generation_config.json overrides config.json's single eos id with the two stop ids
    assert untied.generation.eos_token_id == (319, 317) and untied.generation.pad_token_id == 317
    names = {n for n, _ in untied.parameters_and_names()}
    with open(os.path.join(FIX, "tiny_untied", "model.safetensors.index.json")) as f:
        assert names == set(json.load(f)["weight_map"])
    p = dict(untied.parameters_and_names())["model.layers.1.self_attn.k_proj.bias"]
    assert str(p.dtype) == "Float32" and tuple(p.shape) == (32,)


# --------------------------------------------------------------------------------------------- forward

@pytest.mark.parametrize("name", MODELS)
def test_logits_match_hf_single_prompt(models, ref, name):
    got = models[name](ref["single_ids"]).asnumpy()
    want = ref[f"{name}_single_logits"]
    assert got.shape == want.shape == (1, 23, 320)
    err = np.abs(got - want).max()
    assert err < ATOL, err
    assert np.abs(want).max() > 1.0  # the comparison is not between near-zero numbers


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_hf_left_padded_batch(models, ref, name):
    mask = ref["batch_mask"]
    got = models[name](ref["batch_ids"], attention_mask=mask).asnumpy()
    err = np.abs(_valid_rows(got, mask) - _valid_rows(ref[f"{name}_batch_logits"], mask)).max()
    assert err < ATOL, err


def test_padding_does_not_change_a_prompt(models, ref):
    """The shortest row of the padded batch gives the same logits alone (no pad leaks through the mask)."""
    model, mask, ids = models["tiny_untied"], ref["batch_mask"], ref["batch_ids"]
    row = ids[1][mask[1].astype(bool)][None]
    alone = model(row).asnumpy()[0]
    padded = model(ids, attention_mask=mask).asnumpy()[1][mask[1].astype(bool)]
    assert np.abs(alone - padded).max() < 1e-4


# -------------------------------------------------------------------------------------------- generate

@pytest.mark.parametrize("name", MODELS)
def test_greedy_tokens_equal_hf(models, ref, name):
    model = models[name]
    got = model.generate(ref["single_ids"], max_new_tokens=12, eos_token_id=[])
    np.testing.assert_array_equal(got, ref[f"{name}_single_greedy"])
    got = model.generate(ref["batch_ids"], max_new_tokens=12, attention_mask=ref["batch_mask"], eos_token_id=[])
    np.testing.assert_array_equal(got, ref[f"{name}_batch_greedy"])


@pytest.mark.parametrize("name", MODELS)
def test_greedy_stops_at_eos_and_pads_finished_rows_like_hf(models, ref, name):
    eos = int(ref[f"{name}_stop_eos"])
    got = models[name].generate(ref["batch_ids"], max_new_tokens=12, attention_mask=ref["batch_mask"],
                                eos_token_id=eos, pad_token_id=317)
    want = ref[f"{name}_stop_greedy"]
    np.testing.assert_array_equal(got, want)
    n = ref["batch_ids"].shape[1]
    assert got[0, n + 3] == eos and (got[0, n + 4:] == 317).all()  # row 0 stopped at its 4th token, then pads


def test_kv_cache_decode_equals_full_recompute(models, ref):
    """Each cached decode step's logits equal a fresh full forward over the tokens so far."""
    model = models["tiny_tied"]
    seq = ref["tiny_tied_single_greedy"]
    full = model(seq).asnumpy()[0]
    steps = []
    orig = model.logits

    def spy(hidden):
        out = orig(hidden)
        steps.append(out.asnumpy()[:, -1])
        return out

    model.logits = spy
    try:
        model.generate(ref["single_ids"], max_new_tokens=12, eos_token_id=[])
    finally:
        del model.logits
    n = ref["single_ids"].shape[1]
    for i, step in enumerate(steps):
        assert np.abs(step[0] - full[n - 1 + i]).max() < 1e-4


def test_seeded_sampling_is_reproducible_and_respects_top_k(models, ref):
    model = models["tiny_untied"]
    kw = dict(max_new_tokens=8, do_sample=True, eos_token_id=[], temperature=1.5, top_k=3, top_p=1.0)
    a = model.generate(ref["single_ids"], seed=7, **kw)
    b = model.generate(ref["single_ids"], seed=7, **kw)
    c = model.generate(ref["single_ids"], seed=8, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # every sampled token is among the 3 most likely ones after its prefix
    logits = model(a[:, :-1]).asnumpy()[0]
    n = ref["single_ids"].shape[1]
    for t in range(n, a.shape[1]):
        assert a[0, t] in np.argsort(logits[t - 1])[-3:]


def test_choose_next_tokens_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    assert choose_next_tokens(logits, False, 1.0, 0, 1.0, None).tolist() == [0]
    draws = {int(choose_next_tokens(logits, True, 1.0, 0, 0.7, rng)[0]) for _ in range(200)}
    assert draws == {0, 1}  # top_p 0.7 keeps the 0.5 and 0.3 tokens only
    draws = {int(choose_next_tokens(logits, True, 1.0, 1, 1.0, rng)[0]) for _ in range(50)}
    assert draws == {0}


def test_host_mask_and_positions():
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(positions_from_mask(mask), [[1, 1, 0, 1], [0, 1, 2, 3]])
    m = decoder_mask(mask, 4)
    assert m[0, 3].tolist() == [False, False, True, True] and m[0, 0].tolist() == [True, False, False, False]
    assert decoder_mask(mask, 1)[1, 0].tolist() == [True] * 4


# ------------------------------------------------------------------------------------------- bad input

def _copy(tmp_path, name="tiny_tied"):
    dst = tmp_path / name
    shutil.copytree(os.path.join(FIX, name), dst)
    return dst


def test_missing_folder_config_or_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Qwen2ForCausalLM.from_pretrained(str(tmp_path / "nope"))
    d = _copy(tmp_path)
    os.remove(d / "model.safetensors")
    with pytest.raises(ValueError, match="no weights"):
        Qwen2ForCausalLM.from_pretrained(str(d))
    os.remove(d / "config.json")
    with pytest.raises(ValueError, match="no config.json"):
        Qwen2ForCausalLM.from_pretrained(str(d))


def test_missing_shard_is_a_clear_error(tmp_path):
    d = _copy(tmp_path, "tiny_untied")
    os.remove(d / "model-00002-of-00004.safetensors")
    with pytest.raises(ValueError, match="missing"):
        Qwen2ForCausalLM.from_pretrained(str(d))


@pytest.mark.parametrize("change, match", [
    ({"model_type": "llama"}, "model_type='llama' is not supported"),
    ({"model_type": "qwen2_5_vl"}, "Qwen2_5_VLForConditionalGeneration"),
    ({"use_sliding_window": True}, "use_sliding_window"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope_scaling"),
    ({"num_key_value_heads": 3}, "multiple"),
    ({"intermediate_size": 81}, "mis-shaped"),
])
def test_unsupported_or_inconsistent_config_is_a_clear_error(tmp_path, change, match):
    d = _copy(tmp_path)
    with open(d / "config.json") as f:
        cfg = json.load(f)
    cfg.update(change)
    with open(d / "config.json", "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match=match):
        Qwen2ForCausalLM.from_pretrained(str(d))


def test_out_of_vocabulary_ids_and_bad_arguments_are_rejected(models):
    model = models["tiny_tied"]
    with pytest.raises(ValueError, match="token ids must lie"):
        model(np.array([[1, 320]]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(np.array([[1, 2]]), max_new_tokens=0)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.generate(np.array([[1, 2]]), attention_mask=np.array([[1, 1, 1]]))
