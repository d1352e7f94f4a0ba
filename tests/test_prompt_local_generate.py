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
