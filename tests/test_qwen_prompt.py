"""Local Qwen prompt extension: model resolution (aliases, caches, errors) and end-to-end parity of the answer
with Hugging Face's greedy generation on the same chat-templated input (fixtures from make_qwen_fixtures.py)."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import FIXTURES
from wan.prompt.base import PromptExpander
from PIL import Image

from wan.prompt.qwen import QWEN_MODELS, QwenPromptExpander, fetch_resize, resolve_qwen_model

FIX = os.path.join(FIXTURES, "qwen")
TINY = os.path.join(FIX, "tiny_tied")


@pytest.fixture(scope="module")
def chat():
    with open(os.path.join(FIX, "chat.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def expander(chat):
    return QwenPromptExpander(TINY, "t2v", False, max_new_tokens=chat["max_new_tokens"])


def test_expander_answer_equals_hf_greedy_generation(expander, chat):
    assert isinstance(expander, PromptExpander)
    ids, pixels, grid = expander.chat_inputs(chat["system"], chat["user"])
    assert pixels is None and grid is None
    assert ids[0].tolist() == chat["input_ids"]  # the chat template and tokenizer agree with HF's
    answer = expander.complete(chat["system"], chat["user"], seed=123)
    assert answer == chat["answer"]
    out = expander.model.generate(ids, max_new_tokens=chat["max_new_tokens"])
    assert out[0].tolist() == chat["output_ids"]


def test_unload_releases_the_model(chat):
    exp = QwenPromptExpander(TINY, "t2v", False, max_new_tokens=2)
    exp.unload()
    with pytest.raises(RuntimeError, match="released"):
        exp.complete("s", "p")


def test_official_aliases():
    assert QWEN_MODELS == {
        "QwenVL2.5_3B": "Qwen/Qwen2.5-VL-3B-Instruct", "QwenVL2.5_7B": "Qwen/Qwen2.5-VL-7B-Instruct",
        "Qwen2.5_3B": "Qwen/Qwen2.5-3B-Instruct", "Qwen2.5_7B": "Qwen/Qwen2.5-7B-Instruct",
        "Qwen2.5_14B": "Qwen/Qwen2.5-14B-Instruct"}


def _empty_caches(tmp_path):
    return dict(hf_cache_dir=str(tmp_path / "hf"), modelscope_cache_dir=str(tmp_path / "ms"))


@pytest.mark.parametrize("name, image, repo", [
    (None, False, "Qwen/Qwen2.5-14B-Instruct"), (None, True, "Qwen/Qwen2.5-VL-7B-Instruct"),
    ("Qwen2.5_3B", False, "Qwen/Qwen2.5-3B-Instruct"), ("Qwen/Qwen2.5-7B-Instruct", False, "Qwen/Qwen2.5-7B-Instruct"),
])
def test_defaults_and_uncached_models_name_the_download_command(tmp_path, name, image, repo):
    with pytest.raises(ValueError) as err:
        resolve_qwen_model(name, "i2v" if image else "t2v-A14B", image, **_empty_caches(tmp_path))
    msg = str(err.value)
    assert f"huggingface-cli download {repo} --local-dir" in msg and f"modelscope download --model {repo}" in msg


def test_local_folder_and_bad_inputs(tmp_path):
    assert resolve_qwen_model(TINY, "t2v", False) == os.path.abspath(TINY)
    with pytest.raises(ValueError, match="text-only"):
        resolve_qwen_model(TINY, "ti2v", True)
    with pytest.raises(ValueError, match="text-only model"):
        resolve_qwen_model("Qwen2.5_7B", "i2v", True, **_empty_caches(tmp_path))
    with pytest.raises(ValueError, match="task"):
        resolve_qwen_model(TINY, "video", False)
    with pytest.raises(ValueError, match="neither a model folder"):
        resolve_qwen_model("./no/such/folder", "t2v", False)


def test_hub_id_resolves_through_the_huggingface_cache(tmp_path):
    """A snapshot laid out as huggingface_hub stores it (refs/main -> snapshots/<commit>/...)."""
    repo = tmp_path / "hf" / "models--Qwen--Qwen2.5-3B-Instruct"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(TINY, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    got = resolve_qwen_model("Qwen2.5_3B", "t2v", False, **_empty_caches(tmp_path))
    assert os.path.samefile(got, repo / "snapshots" / commit)


@pytest.mark.parametrize("sub", ["models", ""])
def test_hub_id_resolves_through_the_modelscope_cache(tmp_path, sub):
    folder = tmp_path / "ms" / sub / "Qwen" / "Qwen2___5-7B-Instruct"
    shutil.copytree(TINY, folder)
    got = resolve_qwen_model("Qwen/Qwen2.5-7B-Instruct", "t2v", False, **_empty_caches(tmp_path))
    assert os.path.samefile(got, folder)


def test_folder_without_tokenizer_or_template_is_a_clear_error(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(TINY, d)
    cfg_path = d / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["chat_template"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="chat template"):
        QwenPromptExpander(str(d), "t2v", False)


# ------------------------------------------------------------------------------------------- Qwen2.5-VL

VL = os.path.join(FIX, "vl")


@pytest.fixture(scope="module")
def vl_chat():
    with open(os.path.join(VL, "vl_chat.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def vl_expander(vl_chat):
    return QwenPromptExpander(os.path.join(VL, "tiny_vl"), "i2v", True, max_new_tokens=vl_chat["max_new_tokens"])


def test_vl_expander_follows_the_official_flow_and_equals_hf(vl_expander, vl_chat):
    """fetch_image's resize, the processor at the official pixel limits, the chat template with an image part,
    the image pads expanded, HF greedy generation: same ids, same pixels grid, same answer."""
    image = Image.open(os.path.join(VL, vl_chat["image"]))
    assert list(fetch_resize(image).size) == vl_chat["fetched_size"]
    ids, pixels, grid = vl_expander.chat_inputs(vl_chat["system"], vl_chat["user"], image)
    assert grid.tolist() == vl_chat["grid"] and pixels.shape[0] == int(np.prod(grid))
    assert ids[0].tolist() == vl_chat["input_ids"]
    assert vl_expander.complete(vl_chat["system"], vl_chat["user"], image=image) == vl_chat["answer"]
    # an image file path works too
    path = os.path.join(VL, vl_chat["image"])
    assert vl_expander.complete(vl_chat["system"], vl_chat["user"], image=path) == vl_chat["answer"]


def test_vl_expander_without_an_image_runs_text_only(vl_expander):
    ids, pixels, _ = vl_expander.chat_inputs("sys", "a dog")
    assert pixels is None and 318 not in ids[0].tolist()
    assert isinstance(vl_expander.complete("sys", "a dog"), str)


def test_vl_folder_resolves_for_image_requests():
    folder = os.path.join(VL, "tiny_vl")
    assert resolve_qwen_model(folder, "i2v", True) == os.path.abspath(folder)


def test_image_with_a_text_model_is_refused(expander):
    with pytest.raises(ValueError, match="image"):
        expander.complete("s", "p", image=np.zeros((4, 4, 3), np.uint8))
