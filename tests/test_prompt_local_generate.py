"""generate.py --use_prompt_extend --prompt_extend_method local_qwen on a tiny Qwen2.5 folder (HF parity of the
model itself: test_qwen2.py / test_qwen_prompt.py): the printed prompt is the expander's greedy answer."""
import os

import generate
from conftest import ROOT

QWEN = os.path.join(ROOT, "tests", "fixtures", "qwen", "tiny_untied")


def test_local_qwen_extension_runs_through_generate(tmp_path, capsys):
    from wan.prompt.qwen import QwenPromptExpander

    out = tmp_path / "v.mp4"
    prompt = "a fox in the snow"
    assert generate.main(["--task", "ti2v-5B", "--frame_num", "5", "--sample_steps", "1", "--prompt", prompt,
                          "--use_prompt_extend", "--prompt_extend_method", "local_qwen", "--prompt_extend_model",
                          QWEN, "--prompt_extend_target_lang", "en", "--save_file", str(out)]) == 0
    stdout = capsys.readouterr().out
    expected = QwenPromptExpander(QWEN, "ti2v", False)(prompt, tar_lang="en")
    # (random weights: the answer holds control characters, so no line splitting)
    assert expected.status and expected.prompt != prompt
    assert stdout.count("extended prompt: ") == 1 and f"extended prompt: {expected.prompt}\n" in stdout
    assert out.is_file()


def test_tiny_default_extends_with_the_embedded_qwen(tmp_path, capsys):
    """No --ckpt_dir and no --prompt_extend_model: the embedded random Qwen2.5 (text) / Qwen2.5-VL (with the
    default image) extends offline; the printed prompt is that model's greedy answer."""
    from wan.prompt.qwen import QwenPromptExpander

    for task, kind, with_image in (("t2v-A14B", "t2v", False), ("i2v-A14B", "i2v", True)):
        out = tmp_path / f"{task}.mp4"
        prompt = "a fox in the snow"
        assert generate.main(["--task", task, "--frame_num", "5", "--sample_steps", "1", "--prompt", prompt,
                              "--use_prompt_extend", "--prompt_extend_method", "local_qwen",
                              "--prompt_extend_target_lang", "en", "--save_file", str(out)]) == 0
        stdout = capsys.readouterr().out
        assert "embedded tiny random" in stdout
        expander = QwenPromptExpander(generate.TINY_QWEN[with_image], kind, with_image)
        from wan.utils.media import load_image
        expected = expander(prompt, tar_lang="en",
                            image=load_image(generate.EXAMPLE_IMAGE) if with_image else None)
        assert expected.status and f"extended prompt: {expected.prompt}\n" in stdout
        assert out.is_file()


def test_embedded_qwen_is_the_fixture_made_by_transformers():
    """examples/tiny/qwen2.5(-vl) are byte copies of the fixture folders make_qwen_fixtures.py wrote."""
    pairs = ((generate.TINY_QWEN[False], os.path.join(ROOT, "tests", "fixtures", "qwen", "tiny_untied")),
             (generate.TINY_QWEN[True], os.path.join(ROOT, "tests", "fixtures", "qwen", "vl", "tiny_vl")))
    for embedded, fixture in pairs:
        names = sorted(f for f in os.listdir(fixture))
        assert sorted(f for f in os.listdir(embedded) if f != "README.md") == names
        for name in names:
            with open(os.path.join(embedded, name), "rb") as a, open(os.path.join(fixture, name), "rb") as b:
                assert a.read() == b.read(), name
