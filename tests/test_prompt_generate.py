"""generate.py with --use_prompt_extend: the extended prompt is the one used (the video equals the video of the
extended prompt passed directly), --prompt_file extends each prompt, bad flags fail before loading, and under a
real 2-rank msrun only rank 0 asks the server and both ranks use its answer.

The DashScope side is the local server of tests/prompt_dashscope_server.py, reached through the real SDK.
"""
import json
import logging
import os

import numpy as np
import pytest

import generate
from conftest import ROOT
from prompt_dashscope_server import FakeDashScope
from wan.prompt.system_prompts import SYSTEM_PROMPTS
from wan.utils.media import read_video

KEY = "sk-WANTEST-gen-5d1e9b-NEVER-LOG-ME"
ANSWER = "Day time, daylight, wide shot. A red fox trots across fresh snow, its breath steaming in the cold air."
TINY = ["--frame_num", "5", "--sample_steps", "2", "--base_seed", "5"]


@pytest.fixture
def server(monkeypatch):
    with FakeDashScope(KEY, answer=ANSWER) as s:
        monkeypatch.setenv("DASH_API_KEY", KEY)
        monkeypatch.setenv("DASH_API_URL", s.base_url)
        yield s


def test_extended_prompt_is_printed_logged_and_used(server, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    ext, direct = tmp_path / "ext.mp4", tmp_path / "direct.mp4"
    common = ["--task", "t2v-A14B", "--size", "64*64", *TINY]
    assert generate.main(common + ["--prompt", "a fox", "--save_file", str(ext), "--use_prompt_extend",
                                   "--prompt_extend_method", "dashscope", "--prompt_extend_target_lang", "en"]) == 0
    out = capsys.readouterr().out
    assert f"extended prompt: {ANSWER}" in out and f"extended prompt: {ANSWER}" in caplog.text
    (req,) = server.calls("text")
    system, user = req["body"]["input"]["messages"]
    assert user["content"] == "a fox" and system["content"] == SYSTEM_PROMPTS["t2v", "en"]
    assert req["body"]["model"] == "qwen-plus" and req["body"]["parameters"]["seed"] == 5  # --base_seed
    assert generate.main(common + ["--prompt", ANSWER, "--save_file", str(direct)]) == 0
    a, b = read_video(str(ext))[0], read_video(str(direct))[0]
    assert a.shape == (5, 64, 64, 3) and np.array_equal(a, b)
    assert KEY not in out + caplog.text


def test_prompt_file_extends_each_prompt_and_i2v_extends_an_empty_prompt(server, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server.then("text", ("ok", "answer one: a cat naps on a sunny windowsill"),
                ("ok", "answer two: a dog chases a ball"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    out = tmp_path / "many.mp4"
    assert generate.main(["--task", "t2v-A14B", "--size", "64*64", *TINY, "--prompt_file", str(prompts),
                          "--save_file", str(out), "--use_prompt_extend", "--prompt_extend_method",
                          "dashscope"]) == 0
    assert [r["body"]["input"]["messages"][1]["content"] for r in server.calls("text")] == ["a cat", "a dog"]
    assert "extended prompt: answer one" in caplog.text and "extended prompt: answer two" in caplog.text
    assert sorted(p.name for p in tmp_path.glob("many_*.mp4")) == ["many_000.mp4", "many_001.mp4"]

    # i2v-A14B with an empty prompt: the vision model, the empty-prompt system prompt, the image uploaded
    i2v = tmp_path / "i2v.mp4"
    assert generate.main(["--task", "i2v-A14B", "--size", "64*64", "--frame_num", "5", "--sample_steps", "1",
                          "--prompt", "", "--save_file", str(i2v), "--use_prompt_extend",
                          "--prompt_extend_method", "dashscope", "--prompt_extend_target_lang", "en"]) == 0
    (req,) = server.calls("vl")
    system, user = req["body"]["input"]["messages"]
    assert req["body"]["model"] == "qwen-vl-max" and system["content"][0]["text"] == SYSTEM_PROMPTS["i2v_empty", "en"]
    assert user["content"][0] == {"text": ""} and user["content"][1]["image"].startswith("oss://")
    assert len(server.uploads) == 1 and read_video(str(i2v))[0].shape[0] == 5


@pytest.mark.parametrize("task, image, lang, endpoint, variant, model", [
    ("t2v-A14B", False, "zh", "text", ("t2v", "zh"), "qwen-plus"),
    ("i2v-A14B", True, "en", "vl", ("i2v", "en"), "qwen-vl-max"),
    ("ti2v-5B", False, "en", "text", ("t2v", "en"), "qwen-plus"),
    ("ti2v-5B", True, "zh", "vl", ("i2v", "zh"), "qwen-vl-max"),
])
def test_each_task_asks_the_right_model_with_the_right_system_prompt(server, task, image, lang, endpoint, variant,
                                                                      model):
    """The flags as generate.py validates them, then rank 0's extension step (no video: the routing only)."""
    from wan.pipeline import ParallelHooks

    argv = ["--task", task, "--prompt", "a cat on a skateboard", "--use_prompt_extend", "--prompt_extend_method",
            "dashscope", "--prompt_extend_target_lang", lang]
    if image:
        argv += ["--image", os.path.join(ROOT, "examples", "i2v_input.png")]
    args = generate.validate(generate.parse_args(argv))
    args.base_seed = 9
    assert generate.extend_prompts(args, ParallelHooks()) == [ANSWER.replace("\n", "\\n")]
    (req,) = server.calls(endpoint)
    assert len(server.requests) == (3 if image else 1)  # an image adds the upload-policy and upload requests
    system = req["body"]["input"]["messages"][0]["content"]
    assert (system[0]["text"] if image else system) == SYSTEM_PROMPTS[variant]
    assert req["body"]["model"] == model and req["body"]["parameters"]["seed"] == 9


def _qwen_folder(tmp_path, model_type):
    folder = tmp_path / f"model_{model_type}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(folder)


def test_bad_prompt_extension_flags_fail_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DASH_API_KEY", raising=False)
    ext = ["--use_prompt_extend"]
    cases = [
        (ext + ["--prompt_extend_method", "openai"], "--prompt_extend_method 'openai' is unknown; choose one of "
                                                     "dashscope, local_qwen"),
        (ext + ["--prompt_extend_method", "dashscope"], "set the environment variable DASH_API_KEY"),
        (ext + ["--prompt_extend_target_lang", "fr"], "--prompt_extend_target_lang 'fr' is not supported"),
        (ext + ["--prompt_extend_model", str(tmp_path / "no" / "such" / "model")], "does not exist"),
        (ext + ["--prompt_extend_model", str(tmp_path)], "has no config.json"),
        (ext + ["--prompt_extend_model", _qwen_folder(tmp_path, "t5")], "is a 't5' model, not Qwen2.5"),
        (ext + ["--prompt", " "], "an empty prompt can only be extended from an image"),
        (ext + ["--prompt_extend_system_prompt", str(tmp_path / "none.txt")], "does not exist"),
        # an image request with a text-only model
        (["--task", "i2v-A14B"] + ext + ["--prompt_extend_model", _qwen_folder(tmp_path, "qwen2")],
         "is a text-only Qwen model (qwen2), but this request has an image"),
    ]
    for argv, message in cases:
        out = tmp_path / "x.mp4"
        assert generate.main(argv + ["--save_file", str(out)]) == 2, argv
        assert message in capsys.readouterr().err, argv
        assert not out.exists()

    monkeypatch.setenv("DASH_API_KEY", KEY)
    assert generate.main(["--task", "ti2v-5B", "--image", os.path.join(ROOT, "examples", "i2v_input.png")] + ext
                         + ["--prompt_extend_method", "dashscope", "--prompt_extend_model", "qwen-plus"]) == 2
    err = capsys.readouterr().err
    assert "'qwen-plus' is a text-only DashScope model, but this request has an image" in err and KEY not in err


def test_msrun_rank0_extends_and_every_rank_uses_its_answer(server, tmp_path, caplog):
    """2 CPU ranks with Ulysses: rank 0 alone asks the server; rank 1 gets the answer by broadcast. If rank 1 kept
    the raw prompt, its half of the sequence would be conditioned on other text and the video would differ from
    the single-device video of the extended prompt."""
    from test_distributed import _assert_same_video, _log, _msrun

    common = ["--task", "t2v-A14B", "--ckpt_dir", os.path.join(ROOT, "examples", "tiny", "t2v-A14B"),
              "--size", "64*64", *TINY]
    dist = str(tmp_path / "dist.mp4")
    code, seconds, log_dir = _msrun(tmp_path, os.path.join(ROOT, "generate.py"), *common, "--prompt", "a fox",
                                    "--ulysses_size", "2", "--use_prompt_extend", "--prompt_extend_method",
                                    "dashscope", "--save_file", dist)
    logs = [_log(log_dir, r) for r in range(2)]
    assert code == 0, (f"msrun failed ({seconds:.0f}s):\n{logs[0][-3000:]}\n{logs[1][-3000:]}\n"
                       f"{_log(log_dir, 'scheduler')[-2000:]}")
    assert len(server.calls("text")) == 1  # rank 0 only
    assert f"extended prompt: {ANSWER}" in logs[0] and "ulysses 2" in logs[0]
    assert KEY not in logs[0] + logs[1] + _log(log_dir, "scheduler")
    single = str(tmp_path / "single.mp4")
    assert generate.main(common + ["--prompt", ANSWER, "--save_file", single]) == 0
    _assert_same_video(single, dist)
