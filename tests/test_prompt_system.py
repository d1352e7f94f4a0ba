"""System prompts: the selection rule against the official code's choices, their language, answer cleaning."""
import json
import os
import re

import pytest

from conftest import FIXTURES
from wan.prompt.system_prompts import (SYSTEM_PROMPTS, clean_answer, pick_system_prompt, read_system_prompt,
                                       system_prompt_variant)

OFFICIAL = os.path.join(FIXTURES, "prompt", "official_prompt_extend.json")
# official constant -> (our variant, language); the official ti2v entries reuse the T2V / I2V constants
OFFICIAL_NAMES = {
    "T2V_A14B_ZH_SYS_PROMPT": ("t2v", "zh"), "T2V_A14B_EN_SYS_PROMPT": ("t2v", "en"),
    "I2V_A14B_ZH_SYS_PROMPT": ("i2v", "zh"), "I2V_A14B_EN_SYS_PROMPT": ("i2v", "en"),
    "I2V_A14B_EMPTY_ZH_SYS_PROMPT": ("i2v_empty", "zh"), "I2V_A14B_EMPTY_EN_SYS_PROMPT": ("i2v_empty", "en"),
}
KIND = {"t2v-A14B": "t2v", "i2v-A14B": "i2v", "ti2v-5B": "ti2v"}
CJK = re.compile(r"[\u4e00-\u9fff]")


def _official():
    with open(OFFICIAL, encoding="utf-8") as f:
        return json.load(f)


def test_selection_matches_the_official_choice_for_every_case():
    cases = _official()["selection"]
    assert len(cases) == 24  # 3 tasks x 2 languages x image or not x empty prompt or not
    for case in cases:
        # the official passes is_vl = (an image was given); the expander gets the image itself
        got = pick_system_prompt(KIND[case["task"]], case["lang"], with_image=case["is_vl"],
                                 empty_prompt=case["empty_prompt"])
        assert got is SYSTEM_PROMPTS[OFFICIAL_NAMES[case["official"]]], case


def test_the_rule_in_words():
    assert system_prompt_variant("ti2v", with_image=True, empty_prompt=True) == "i2v"  # no empty variant for ti2v
    assert system_prompt_variant("i2v", with_image=True, empty_prompt=True) == "i2v_empty"
    assert system_prompt_variant("t2v", with_image=False, empty_prompt=False) == "t2v"
    with pytest.raises(ValueError, match="no system prompt for task kind 's2v'"):
        system_prompt_variant("s2v", with_image=True, empty_prompt=False)
    with pytest.raises(ValueError, match="--prompt_extend_target_lang 'fr' is not supported; choose one of zh, en"):
        pick_system_prompt("t2v", "fr", with_image=False, empty_prompt=False)


@pytest.mark.parametrize("variant", ["t2v", "i2v", "i2v_empty"])
def test_each_prompt_asks_for_its_language_length_and_bare_output(variant):
    zh, en = SYSTEM_PROMPTS[variant, "zh"], SYSTEM_PROMPTS[variant, "en"]
    assert zh != en and len(set(SYSTEM_PROMPTS.values())) == 6
    assert "输出中文" in zh or "中文提示词" in zh
    assert not CJK.search(en) and "must be in English" in en
    limit_zh, limit_en = ("60到200字", "60 to 200 words") if variant == "t2v" else ("100字以内", "100 words or fewer")
    assert limit_zh in zh and limit_en in en
    assert ("只输出" in zh or "直接输出" in zh) and "Output only" in en
    if variant == "t2v":  # the cinematic vocabulary the official offers, and the content rules
        for word in ("Day time", "Edge lighting", "Center composition", "Medium shot", "Aerial shot"):
            assert word in en
        assert "湛蓝" in zh and "deep-blue sky" in en and "bikini" in en
    else:  # grounded in the image, motion only
        assert "图片" in zh and "image" in en
        assert "static" in en


def test_clean_answer_as_official():
    # the official returns text answers unchanged and escapes line breaks in the vision call's answers
    assert clean_answer("a cat\nruns") == "a cat\nruns"
    assert clean_answer("a cat\nruns", escape_newlines=True) == "a cat\\nruns"
    assert clean_answer("  a cat  \n") == "a cat"  # whitespace the T5 tokenizer's cleaning would drop anyway
    with pytest.raises(TypeError):
        clean_answer(None)


def test_read_system_prompt(tmp_path):
    f = tmp_path / "sys.txt"
    f.write_text("  Rewrite the prompt as a haiku.\n", encoding="utf-8")
    assert read_system_prompt(str(f)) == "Rewrite the prompt as a haiku."
    with pytest.raises(ValueError, match="does not exist"):
        read_system_prompt(str(tmp_path / "none.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_system_prompt(str(tmp_path / "empty.txt"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_system_prompt(str(tmp_path / "bin.txt"))
