"""Local Qwen2.5 / Qwen2.5-VL prompt extension on our own MindSpore Cells, greedy and offline.

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

__all__ = ["QWEN_MODELS", "DEFAULT_TEXT_MODEL", "DEFAULT_VL_MODEL", "resolve_qwen_model", "QwenPromptExpander",
           "fetch_resize"]

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


# The official local VL flow: the image is first resized by qwen_vl_utils' rule (these limits), then by the
# processor's rule with the limits the official expander gives it.
_FETCH_MIN_PIXELS, _FETCH_MAX_PIXELS = 4 * 28 * 28, 16384 * 28 * 28
VL_MIN_PIXELS, VL_MAX_PIXELS = 256 * 28 * 28, 1280 * 28 * 28


def fetch_resize(image, factor: int = 28):
    """The official pre-resize of an input image (qwen_vl_utils.fetch_image): RGB, each side rounded to a multiple
    of ``factor`` (at least ``factor``), scaled down or up into [4, 16384] * 28 * 28 pixels, bicubic."""
    from PIL import Image

    from ..modules.qwen2_5_vl import smart_resize

    image = image.convert("RGB")
    w, h = image.size
    h_bar, w_bar = smart_resize(h, w, factor, _FETCH_MIN_PIXELS, _FETCH_MAX_PIXELS, at_least_factor=True)
    return image.resize((w_bar, h_bar), Image.BICUBIC)


class QwenPromptExpander(PromptExpander):
    """Extends prompts with a local Qwen2.5-Instruct or Qwen2.5-VL-Instruct model on our Cells: chat template from
    the folder's tokenizer (transformers, no torch), images through :class:`QwenVLImageProcessor`, greedy
    decoding (the same inputs give the same prompt; the seed is unused, as in the official local backend).

    Args:
        model_name_or_path: see :func:`resolve_qwen_model` (None: the official default for ``is_vl``).
        task_kind: "t2v" | "i2v" | "ti2v" (the system prompt).
        is_vl: the requests carry an image (needs a Qwen2.5-VL model).
        max_new_tokens: decoding budget (the official 512).
        dtype: parameter dtype (default: bf16 on Ascend, float32 on CPU).
        min_pixels, max_pixels: the image processor's limits (the official 256*28*28 and 1280*28*28).
    """

    def __init__(self, model_name_or_path: Optional[str], task_kind: str, is_vl: bool, *,
                 max_new_tokens: int = 512, dtype=None, min_pixels: int = VL_MIN_PIXELS,
                 max_pixels: int = VL_MAX_PIXELS):
        super().__init__(task_kind, is_vl)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
        self.max_new_tokens = max_new_tokens
        self.model_path = resolve_qwen_model(model_name_or_path, task_kind, is_vl)
        model_type = _model_type(self.model_path)
        self.tokenizer = _load_tokenizer(self.model_path)
        self.chat_template = _chat_template(self.model_path, self.tokenizer)
        start = time.perf_counter()
        if model_type in _VL_TYPES:
            from wan.modules.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration, QwenVLImageProcessor

            self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.model_path, dtype=dtype)
            vision = self.model.vl_config.vision
            self.processor = QwenVLImageProcessor(min_pixels, max_pixels, vision.patch_size,
                                                  vision.spatial_merge_size, vision.temporal_patch_size)
            self.image_pad = self.tokenizer.convert_ids_to_tokens(self.model.vl_config.image_token_id)
            self.is_vl = True
        else:
            from wan.modules.qwen2 import Qwen2ForCausalLM

            self.model = Qwen2ForCausalLM.from_pretrained(self.model_path, dtype=dtype)
            self.processor = None
        log.info("loaded %s for prompt extension in %.1f s", self.model_path, time.perf_counter() - start)

    def _template(self, messages) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=True)

    def chat_inputs(self, system_prompt: str, prompt: str, image=None):
        """(input_ids int64 [1, L], pixel_values [S, D] or None, image_grid_thw [1, 3] or None) for one request,
        built as the official local backend builds them."""
        import numpy as np

        if image is None:
            messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
            text, pixels, grid = self._template(messages), None, None
        else:
            image = _as_pil(image)
            messages = [{"role": "system", "content": [{"type": "text", "text": system_prompt}]},
                        {"role": "user", "content": [{"type": "image", "image": image},
                                                     {"type": "text", "text": prompt}]}]
            text = self._template(messages)
            pixels, grid = self.processor([fetch_resize(image)])
            merge = self.processor.merge_size ** 2
            if text.count(self.image_pad) != 1:
                raise ValueError(f"the chat template produced {text.count(self.image_pad)} {self.image_pad} "
                                 "tokens for one image; use the template that ships with the Qwen2.5-VL folder")
            text = text.replace(self.image_pad, self.image_pad * (int(np.prod(grid[0])) // merge))
        return np.asarray([self.tokenizer(text)["input_ids"]], dtype=np.int64), pixels, grid

    def complete(self, system_prompt: str, prompt: str, *, image=None, seed: int = -1) -> str:
        if image is not None and self.processor is None:
            raise ValueError("this text-only Qwen model cannot take an image; use a Qwen2.5-VL model")
        if self.model is None:
            raise RuntimeError("the model was released (unload()); build a new QwenPromptExpander")
        ids, pixels, grid = self.chat_inputs(system_prompt, prompt, image)
        start = time.perf_counter()
        if pixels is None:
            out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        else:
            out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False, pixel_values=pixels,
                                      image_grid_thw=grid)
        new = out[0, ids.shape[1]:].tolist()
        log.info("local Qwen: %d prompt tokens, %d new tokens in %.1f s", ids.shape[1], len(new),
                 time.perf_counter() - start)
        if pixels is None:
            return self.tokenizer.decode(new, skip_special_tokens=True)
        return self.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def unload(self) -> None:
        """Drop the model's parameters (before the DiT needs the memory); the tokenizer stays."""
        self.model = None


def _as_pil(image):
    """A PIL image from a PIL image or an image file path."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        try:
            return Image.open(image)
        except OSError as err:
            raise ValueError(f"cannot read image {image!r}: {err}") from None
    raise ValueError(f"image must be a PIL image or a file path, got {type(image).__name__}")


def _chat_template(folder: str, tok) -> str:
    """The tokenizer's chat template, else the folder's chat_template.jinja / chat_template.json (VL releases)."""
    if getattr(tok, "chat_template", None):
        return tok.chat_template
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    path = os.path.join(folder, "chat_template.json")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                template = json.load(f).get("chat_template")
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if template:
            return template
    raise ValueError(f"{folder}: the tokenizer has no chat template (tokenizer_config.json 'chat_template', "
                     "chat_template.jinja or chat_template.json); use an Instruct model folder")


def _load_tokenizer(folder: str):
    """The folder's tokenizer through transformers (fast tokenizers work without torch)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder}: cannot load its tokenizer ({err}); the folder needs tokenizer.json (or "
                         "vocab.json + merges.txt) and tokenizer_config.json as downloaded") from None
    return tok
