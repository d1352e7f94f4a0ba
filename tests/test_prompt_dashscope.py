"""DashScope prompt extension through the real ``dashscope`` SDK and its real HTTP path (requests), against a
local server on 127.0.0.1 speaking the DashScope wire format (tests/prompt_dashscope_server.py).

The requests are compared with the ones the OFFICIAL ``DashScopePromptExpander`` sent to the same server
(tests/fixtures/make_prompt_fixtures.py): same body layout, parameters, upload and answer handling.
"""
import hashlib
import io
import json
import logging
import os
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES
from prompt_dashscope_server import FakeDashScope
from wan.prompt.dashscope import (DashScopePromptExpander, check_dashscope_model, dashscope_api_key,
                                  scale_image_for_upload)
from wan.prompt.system_prompts import SYSTEM_PROMPTS

KEY = "sk-WANTEST-3f9c1d7e5a-NEVER-LOG-ME"
OTHER_KEY = "sk-WANTEST-wrong-0b8e4c2f-NEVER-LOG-ME"
OFFICIAL_NAMES = {"T2V_A14B_EN_SYS_PROMPT": ("t2v", "en"), "I2V_A14B_ZH_SYS_PROMPT": ("i2v", "zh")}


def _official():
    with open(os.path.join(FIXTURES, "prompt", "official_prompt_extend.json"), encoding="utf-8") as f:
        return json.load(f)


def official_test_image():
    """The fixture script's 1000x700 image (same closed formula)."""
    y, x = np.mgrid[0:700, 0:1000]
    arr = np.stack([(x * 3 + y * 5 + c * 70 + (x * y) % 17) % 256 for c in range(3)], -1).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.fixture
def server():
    with FakeDashScope(KEY, answer="first line\nsecond line") as s:
        yield s


@pytest.fixture
def watch(caplog, capsys):
    """Everything logged (any logger, DEBUG and up, the SDK's included) and printed during the test."""
    caplog.set_level(logging.DEBUG)

    def text():
        out, err = capsys.readouterr()
        return caplog.text + out + err
    return text


def expander(server, kind="t2v", is_vl=False, key=KEY, **kw):
    kw = {"timeout": 5.0, "retries": 3, "backoff": 0.01, **kw}
    return DashScopePromptExpander(kind, is_vl=is_vl, api_key=key, base_url=server.base_url, **kw)


def _scrub(body, names):
    """The request body with the system prompt text replaced by the official constant it corresponds to."""
    body = json.loads(json.dumps(body))
    inv = {SYSTEM_PROMPTS[v]: k for k, v in names.items()}
    for m in body["input"]["messages"]:
        if m["role"] == "system":
            if isinstance(m["content"], str):
                m["content"] = inv[m["content"]]
            else:
                m["content"][0]["text"] = inv[m["content"][0]["text"]]
    return body


# ------------------------------------------------------------------------------------------------ success

def test_text_request_and_answer_as_official(server, watch):
    ref = _official()
    out = expander(server)(ref["prompt"], tar_lang="en", seed=ref["seed"])
    assert out.status and out.message == ""
    assert out.prompt == ref["text"]["returned"] == "first line\nsecond line"
    (req,) = server.calls("text")
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert _scrub(req["body"], OFFICIAL_NAMES) == ref["text"]["body"]
    assert KEY not in watch()


def test_image_request_upload_and_answer_as_official(server, watch):
    ref = _official()
    before = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("wan_prompt_")}
    out = expander(server, "i2v", is_vl=True)(ref["prompt"], tar_lang="zh", image=official_test_image(),
                                              seed=ref["seed"])
    assert out.status and out.prompt == ref["vl"]["returned"] == "first line\\nsecond line"
    (req,) = server.calls("vl")
    (oss_key, data), = server.uploads.items()
    body = _scrub(req["body"], OFFICIAL_NAMES)
    assert body["input"]["messages"][1]["content"][1]["image"] == f"oss://{oss_key}"
    body["input"]["messages"][1]["content"][1]["image"] = "oss://<upload>"
    assert body == ref["vl"]["body"]
    assert req["headers"].get("X-DashScope-OssResourceResolve") == ref["vl"]["oss_resolve_header"] == "enable"
    # the uploaded image: a PNG of at most 512*512 pixels, the very pixels the official sent
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and list(img.size) == ref["vl"]["upload_size"] == [612, 428]
    assert img.size[0] * img.size[1] <= 512 * 512
    assert hashlib.sha256(np.asarray(img.convert("RGB")).tobytes()).hexdigest() == ref["vl"]["upload_sha256"]
    # the temporary file is gone, and no other of ours was left behind
    assert os.path.basename(oss_key).startswith("wan_prompt_")
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), os.path.basename(oss_key)))
    assert {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("wan_prompt_")} == before
    assert KEY not in watch()


def test_empty_prompt_for_i2v_sends_the_empty_prompt_system_prompt(server):
    out = expander(server, "i2v", is_vl=True)("", tar_lang="en", image=Image.new("RGB", (64, 48), (9, 90, 200)))
    assert out.status
    (req,) = server.calls("vl")
    system, user = req["body"]["input"]["messages"]
    assert system["content"][0]["text"] == SYSTEM_PROMPTS["i2v_empty", "en"]
    assert user["content"][0] == {"text": ""}
    (data,) = server.uploads.values()
    assert Image.open(io.BytesIO(data)).size == (64, 48)  # small images are sent as they are


def test_scale_image_for_upload_keeps_the_aspect_and_the_bound():
    for w, h in [(1000, 700), (4000, 10), (10, 4000), (513, 513), (1280, 720), (3, 2)]:
        out = scale_image_for_upload(Image.new("RGB", (w, h)))
        ow, oh = out.size
        assert ow * oh <= 512 * 512 and out.mode == "RGB"
        if w * h > 512 * 512:
            assert ow * oh > 0.98 * 512 * 512 or min(ow, oh) <= 2
            assert abs(ow / oh - w / h) / (w / h) < 0.02 or min(ow, oh) <= 2
        else:
            assert (ow, oh) == (w, h)


# ------------------------------------------------------------------------------------------------ failures

def test_bad_key_falls_back_at_once_with_the_reason(server, watch):
    ex = expander(server, key=OTHER_KEY)
    out = ex("a red fox", tar_lang="en")
    assert not out.status and out.prompt == "a red fox"
    assert "HTTP 401 InvalidApiKey" in out.message and "check DASH_API_KEY" in out.message
    assert len(server.calls("text")) == 1  # a rejected key is not retried
    logged = watch()
    assert "prompt extension failed" in logged and "using the original prompt" in logged
    assert OTHER_KEY not in logged and OTHER_KEY not in repr(out) and OTHER_KEY not in repr(ex)


def test_server_error_then_success_retries_with_backoff(server, watch):
    server.then("text", ("status", 500, "InternalError", "try again"), ("status", 503, "Throttling", "busy"))
    t0 = time.monotonic()
    out = expander(server, backoff=0.2)("a red fox", tar_lang="zh")
    elapsed = time.monotonic() - t0
    assert out.status and out.prompt == "first line\nsecond line"
    assert len(server.calls("text")) == 3
    assert elapsed >= 0.2 + 0.4  # 0.2 s, then doubled
    assert "attempt 1/3 failed (HTTP 500 InternalError: try again)" in watch()


def test_server_errors_on_every_attempt_give_the_last_reason(server):
    server.then("text", *[("status", 502, "BadGateway", "upstream down")] * 3)
    out = expander(server)("a red fox")
    assert not out.status and out.prompt == "a red fox"
    assert "HTTP 502 BadGateway: upstream down (after 3 attempts)" in out.message


def test_timeout_falls_back_with_the_reason(server, watch):
    server.then("text", ("sleep", 1.5), ("sleep", 1.5))
    t0 = time.monotonic()
    out = expander(server, timeout=0.4, retries=2)("a red fox")
    assert time.monotonic() - t0 < 1.4  # two 0.4 s timeouts, not the server's delay
    assert not out.status and out.prompt == "a red fox"
    assert "no answer from http://127.0.0.1" in out.message and "within 0.4s (after 2 attempts)" in out.message
    assert "prompt extension failed" in watch()


def test_failed_image_request_still_removes_the_temporary_file(server, watch):
    server.then("vl", ("status", 400, "InvalidParameter", "model does not take images"))
    out = expander(server, "ti2v", is_vl=True, retries=2)("a cat", image=Image.new("RGB", (700, 700)))
    assert not out.status and "HTTP 400 InvalidParameter" in out.message and len(server.calls("vl")) == 1
    (oss_key,) = server.uploads
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), os.path.basename(oss_key)))
    (data,) = server.uploads.values()
    assert Image.open(io.BytesIO(data)).size == (512, 512)
    assert KEY not in watch()


def test_unreachable_endpoint_falls_back(watch):
    with FakeDashScope(KEY) as s:
        url = s.base_url  # the port is free again once the server is closed
    ex = DashScopePromptExpander("t2v", api_key=KEY, base_url=url, timeout=2, retries=2, backoff=0.01)
    out = ex("a red fox")
    assert not out.status and out.prompt == "a red fox" and "cannot reach" in out.message
    assert KEY not in watch()


# ---------------------------------------------------------------------------------------------- bad input

def test_key_and_model_checks(monkeypatch):
    monkeypatch.delenv("DASH_API_KEY", raising=False)
    with pytest.raises(ValueError, match="set the environment variable DASH_API_KEY"):
        DashScopePromptExpander("t2v")
    with pytest.raises(ValueError, match="whitespace or control characters") as e:
        dashscope_api_key({"DASH_API_KEY": KEY + "\n"})
    assert KEY not in str(e.value)
    monkeypatch.setenv("DASH_API_KEY", KEY)
    monkeypatch.setenv("DASH_API_URL", "http://127.0.0.1:9/api/v1/")
    ex = DashScopePromptExpander("ti2v", is_vl=True)
    assert ex.model_name == "qwen-vl-max" and ex.base_url == "http://127.0.0.1:9/api/v1"
    assert KEY not in repr(ex) and KEY not in str(vars(ex))
    assert DashScopePromptExpander("t2v").model_name == "qwen-plus"
    assert check_dashscope_model("qwen2.5-vl-72b-instruct", True) == "qwen2.5-vl-72b-instruct"
    with pytest.raises(ValueError, match="'qwen-max' is a text-only DashScope model, but this request has an image"):
        check_dashscope_model("qwen-max", True)
    with pytest.raises(ValueError, match="is not an http"):
        DashScopePromptExpander("t2v", base_url="dashscope.example")


def test_text_only_expander_refuses_an_image(server):
    with pytest.raises(ValueError, match="text-only model got an image"):
        expander(server)("a cat", image=Image.new("RGB", (8, 8)))
    assert server.requests == []
