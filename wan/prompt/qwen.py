"""Local Qwen2.5 prompt extension on our own MindSpore Cells (``wan.modules.qwen2``), greedy and offline.

``--prompt_extend_model`` may be one of the official aliases (``Qwen2.5_3B`` ... ``QwenVL2.5_7B``), a local model
folder, or a hub id (``Qwen/Qwen2.5-7B-Instruct``) already in the local Hugging Face or ModelScope cache. Nothing
is downloaded: a missing model is a ValueError that names the download command.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional

from .base import PromptExpander

log = logging.getLogger("wan")

__all__ = ["QWEN_MODELS", "DEFAULT_TEXT_MODEL", "DEFAULT_VL_MODEL", "resolve_qwen_model", "QwenPromptExpander"]

# The official aliases (wan/utils/prompt_extend.py of the release) and the hub ids they stand for.
QWEN_MODELS = {
    "QwenVL2.5_3B": "Qwen/Qwen2.5-VL-3B-Instruct",
    "QwenVL2.5_7B": "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen2.5_3B": "Qwen/Qwen2.5-3B-Instruct",
    "Qwen2.5_7B": "Qwen/Qwen2.5-7B-Instruct",
    "Qwen2.5_14B": "Qwen/Qwen2.5-14B-Instruct",
}
# The official defaults: a text model for text-only requests, a vision-language model when an image is given
# (the task only chooses the system prompt).
DEFAULT_TEXT_MODEL = "Qwen2.5_14B"
DEFAULT_VL_MODEL = "QwenVL2.5_7B"
TASK_KINDS = ("t2v", "i2v", "ti2v", "s2v")
_VL_TYPES = ("qwen2_5_vl",)
_TEXT_TYPES = ("qwen2",)


def _hf_cache_dir() -> str:
    """huggingface_hub's cache folder, from the same variables it reads (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                     os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(home, "hub")


def _modelscope_cache_dir() -> str:
    return os.environ.get("MODELSCOPE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "modelscope", "hub")


def _from_hf_cache(repo_id: str, cache_dir: str) -> Optional[str]:
    """The cached snapshot folder of ``repo_id`` (its ``main`` revision), or None; never touches the network."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # transformers brings huggingface_hub; without it there is no cache to look in
        return None
    try:
        return snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None


def _from_modelscope_cache(repo_id: str, cache_dir: str) -> Optional[str]:
    """ModelScope's cache folder of ``repo_id``, or None. ModelScope spells '.' in names as '___' on disk and
    has used both ``<cache>/<org>/<name>`` and ``<cache>/models/<org>/<name>``."""
    org, _, name = repo_id.partition("/")
    for base in (os.path.join(cache_dir, "models"), cache_dir):
        for spelled in (name.replace(".", "___"), name):
            folder = os.path.join(base, org, spelled)
            if os.path.isfile(os.path.join(folder, "config.json")):
                return folder
    return None


def _model_type(folder: str) -> Optional[str]:
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type")
    except (OSError, ValueError):
        return None  # reported with its reason when the model is loaded


def resolve_qwen_model(name_or_path: Optional[str], task: str, with_image: bool, *,
                       hf_cache_dir: Optional[str] = None, modelscope_cache_dir: Optional[str] = None) -> str:
    """The local folder of the Qwen model to extend prompts with.

    Args:
        name_or_path: None (the official default: ``Qwen2.5_14B``, or ``QwenVL2.5_7B`` with an image), an alias
            of :data:`QWEN_MODELS`, a local folder, or a hub id ``org/name`` looked up in the local caches.
        task: the task kind ("t2v", "i2v", "ti2v", "s2v"), checked here; it chooses the system prompt elsewhere.
        with_image: the request has an image, so the model must be a vision-language one.
        hf_cache_dir, modelscope_cache_dir: the caches to search (default: where huggingface_hub / modelscope
            keep them, from HF_HUB_CACHE / HF_HOME and MODELSCOPE_CACHE).
    Returns:
        an existing folder path.
    Raises:
        ValueError naming the fix: unknown task, a text-only model for an image, a path that does not exist, or a
        hub id in neither cache (with the ``huggingface-cli download`` / ``modelscope download`` commands).
    """
    kind = str(task).split("-")[0]
    if kind not in TASK_KINDS:
        raise ValueError(f"task {task!r} is not one of {TASK_KINDS} (or a task name such as 't2v-A14B')")
    name = name_or_path if name_or_path else (DEFAULT_VL_MODEL if with_image else DEFAULT_TEXT_MODEL)
    if os.path.isdir(name):
        folder = os.path.abspath(name)
    elif name in QWEN_MODELS or (name.count("/") == 1 and not name.startswith((".", "/", "~"))
                                 and not os.path.exists(name)):
        repo_id = QWEN_MODELS.get(name, name)
        if with_image and name in QWEN_MODELS and "VL" not in name:
            raise ValueError(f"--prompt_extend_model {name} is a text-only model but the request has an image; "
                             f"use a vision-language model such as {DEFAULT_VL_MODEL}")
        folder = (_from_hf_cache(repo_id, hf_cache_dir or _hf_cache_dir())
                  or _from_modelscope_cache(repo_id, modelscope_cache_dir or _modelscope_cache_dir()))
        if folder is None:
            local = "./" + repo_id.split("/")[-1]
            raise ValueError(
                f"Qwen model {name!r} ({repo_id}) is not downloaded: it is in neither the Hugging Face cache "
                f"({hf_cache_dir or _hf_cache_dir()}) nor the ModelScope cache "
                f"({modelscope_cache_dir or _modelscope_cache_dir()}), and nothing is fetched from the network. "
                f"Download it with `huggingface-cli download {repo_id} --local-dir {local}` or "
                f"`modelscope download --model {repo_id} --local_dir {local}`, then pass "
                f"--prompt_extend_model {local}" + (f" (if you meant a local folder: {os.path.abspath(name)} does "
                                                   "not exist)" if name not in QWEN_MODELS else ""))
    else:
        raise ValueError(f"--prompt_extend_model {name!r} is neither a model folder, an alias "
                         f"({', '.join(QWEN_MODELS)}) nor a hub id 'org/name'; check the path")
    model_type = _model_type(folder)
    if with_image and model_type in _TEXT_TYPES:
        raise ValueError(f"{folder} is a text-only Qwen model (model_type {model_type!r}) but the request has an "
                         f"image; use a Qwen2.5-VL model such as {DEFAULT_VL_MODEL}")
    return folder


class QwenPromptExpander(PromptExpander):
    """Extends prompts with a local Qwen2.5-Instruct model: chat template from the folder's tokenizer
    (transformers, no torch), greedy decoding (the same inputs give the same prompt; the seed is unused, as in
    the official local backend).

    Args:
        model_name_or_path: see :func:`resolve_qwen_model`.
        task_kind: "t2v" | "i2v" | "ti2v" (the system prompt).
        is_vl: the requests carry an image (needs a Qwen2.5-VL model).
        max_new_tokens: decoding budget (the official 512).
        dtype: parameter dtype (default: bf16 on Ascend, float32 on CPU).
    """

    def __init__(self, model_name_or_path: Optional[str], task_kind: str, is_vl: bool, *,
                 max_new_tokens: int = 512, dtype=None):
        super().__init__(task_kind, is_vl)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
        self.max_new_tokens = max_new_tokens
        self.model_path = resolve_qwen_model(model_name_or_path, task_kind, is_vl)
        model_type = _model_type(self.model_path)
        if model_type in _VL_TYPES:
            raise ValueError(f"{self.model_path}: Qwen2.5-VL (model_type {model_type!r}) is not available as a "
                             "local backend in this build; use a Qwen2.5 text model (e.g. Qwen2.5_7B) or "
                             "--prompt_extend_method dashscope for image prompts")
        if is_vl:
            raise ValueError("local image-conditioned prompt extension needs Qwen2.5-VL, which this build does not "
                             "provide; use --prompt_extend_method dashscope for image prompts")
        from wan.modules.qwen2 import Qwen2ForCausalLM

        self.tokenizer = _load_tokenizer(self.model_path)
        start = time.perf_counter()
        self.model = Qwen2ForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        log.info("loaded %s for prompt extension in %.1f s", self.model_path, time.perf_counter() - start)

    def chat_ids(self, system_prompt: str, prompt: str):
        """The chat-templated prompt as int64 numpy [1, L]."""
        import numpy as np

        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return np.asarray([self.tokenizer(text)["input_ids"]], dtype=np.int64)

    def complete(self, system_prompt: str, prompt: str, *, image=None, seed: int = -1) -> str:
        if image is not None:
            raise ValueError("this text-only Qwen model cannot take an image")
        if self.model is None:
            raise RuntimeError("the model was released (unload()); build a new QwenPromptExpander")
        ids = self.chat_ids(system_prompt, prompt)
        start = time.perf_counter()
        out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[0, ids.shape[1]:]
        log.info("local Qwen: %d prompt tokens, %d new tokens in %.1f s", ids.shape[1], len(new),
                 time.perf_counter() - start)
        return self.tokenizer.decode(new.tolist(), skip_special_tokens=True)

    def unload(self) -> None:
        """Drop the model's parameters (before the DiT needs the memory); the tokenizer stays."""
        self.model = None


def _load_tokenizer(folder: str):
    """The folder's tokenizer through transformers (fast tokenizers work without torch)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: cannot load its tokenizer ({err}); the folder needs tokenizer.json (or "
                         "vocab.json + merges.txt) and tokenizer_config.json as downloaded") from None
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{folder}: the tokenizer has no chat template (tokenizer_config.json 'chat_template'); "
                         "use an Instruct model folder")
    return tok
