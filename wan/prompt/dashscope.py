"""Prompt extension through Alibaba Cloud's DashScope API, with the official ``dashscope`` SDK.

Text requests go to a chat model (default ``qwen-plus``) through ``dashscope.Generation``; requests with an image
go to a vision-language model (default ``qwen-vl-max``) through ``dashscope.MultiModalConversation``, the image
scaled to at most 512*512 pixels and handed to the SDK as a ``file://`` PNG, which the SDK uploads; the temporary
file is removed whatever happens.

The API key comes from ``DASH_API_KEY`` (or the ``api_key`` argument) and is passed to each SDK call, never put
in a message, a log line or a repr; ``DASH_API_URL`` replaces the endpoint (default the public DashScope URL).
Each call has a timeout; time-outs, connection errors, HTTP 408/429 and 5xx are retried with exponential backoff;
a rejected request (bad key, unknown model, bad input) is not retried. When every attempt fails,
``PromptExpander.__call__`` returns the user's prompt with a warning giving the reason (the official behaviour).

The SDK is imported when an expander is built, so the rest of the project runs without it.
"""
from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import time
from http import HTTPStatus
from typing import Optional

from .base import PromptExpander

__all__ = ["DashScopePromptExpander", "DashScopeError", "DEFAULT_URL", "DEFAULT_TEXT_MODEL", "DEFAULT_VL_MODEL",
           "check_dashscope_model", "dashscope_api_key", "scale_image_for_upload"]

log = logging.getLogger("wan")

DEFAULT_URL = "https://dashscope.aliyuncs.com/api/v1"
DEFAULT_TEXT_MODEL = "qwen-plus"
DEFAULT_VL_MODEL = "qwen-vl-max"
MAX_IMAGE_PIXELS = 512 * 512
SDK_HINT = "pip install dashscope==1.24.10"

# DashScope's vision-language model names (qwen-vl-max, qwen2.5-vl-72b-instruct, qvq-max, qwen-omni-turbo...)
_VISION_NAME = re.compile(r"vl|qvq|omni", re.IGNORECASE)
# Rejections that the same request cannot get past on a second try.
_FINAL_STATUS = {HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND}
_RETRY_STATUS = {HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS}


class DashScopeError(RuntimeError):
    """A DashScope request failed; the message says why (it never contains the API key)."""


class _Secret:
    """Holds a string without showing it in repr/str (tracebacks, debuggers, logged objects)."""
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<hidden>"

    __str__ = __repr__


def dashscope_api_key(environ=None) -> str:
    """``DASH_API_KEY`` from the environment, checked. Raises ValueError (without the key) if unset or malformed."""
    environ = os.environ if environ is None else environ
    key = environ.get("DASH_API_KEY", "")
    if not key.strip():
        raise ValueError("--prompt_extend_method dashscope needs an API key: set the environment variable "
                         "DASH_API_KEY=<your DashScope key> (and DASH_API_URL=<endpoint> for a non-default region), "
                         "or use --prompt_extend_method local_qwen")
    if key != key.strip() or any(c.isspace() or ord(c) < 32 for c in key):
        raise ValueError("DASH_API_KEY contains whitespace or control characters; set it to the key alone")
    return key


def check_dashscope_model(model_name: Optional[str], with_image: bool) -> str:
    """The DashScope model for a request (the default when ``model_name`` is None), checked against the input.

    Raises ValueError when an image request names a text-only model: the official code would send it to the
    multimodal endpoint and get a rejection back only after the whole pipeline was set up.
    """
    if model_name is None:
        return DEFAULT_VL_MODEL if with_image else DEFAULT_TEXT_MODEL
    if not isinstance(model_name, str) or not model_name.strip() or any(c.isspace() for c in model_name):
        raise ValueError(f"--prompt_extend_model {model_name!r} is not a DashScope model name (e.g. "
                         f"{DEFAULT_TEXT_MODEL}, {DEFAULT_VL_MODEL})")
    if with_image and not _VISION_NAME.search(model_name):
        raise ValueError(f"--prompt_extend_model {model_name!r} is a text-only DashScope model, but this request "
                         f"has an image; pass a vision-language model such as {DEFAULT_VL_MODEL} (or leave "
                         f"--prompt_extend_model out)")
    return model_name


def scale_image_for_upload(image, max_pixels: int = MAX_IMAGE_PIXELS):
    """An RGB copy of the PIL ``image`` with at most ``max_pixels`` pixels, same aspect ratio (official rule:
    side lengths sqrt(area * h/w) and sqrt(area * w/h), area = min(w*h, max_pixels)); never enlarged."""
    image = image.convert("RGB")
    w, h = image.size
    if w * h <= max_pixels:
        return image
    area, ratio = max_pixels, h / w
    new_w, new_h = max(1, round(math.sqrt(area / ratio))), max(1, round(math.sqrt(area * ratio)))
    while new_w * new_h > max_pixels:  # rounding up on both sides can overshoot by a row or column
        if new_w >= new_h:
            new_w -= 1
        else:
            new_h -= 1
    return image.resize((new_w, new_h))


class DashScopePromptExpander(PromptExpander):
    """Prompt extension by a DashScope model.

    Args:
        task_kind: "t2v" | "i2v" | "ti2v".
        is_vl: requests carry an image (default model qwen-vl-max instead of qwen-plus).
        model_name: DashScope model; None for the default.
        api_key: the key; None reads DASH_API_KEY.
        base_url: the endpoint; None reads DASH_API_URL, else the public DashScope URL.
        timeout: seconds per HTTP request (connect and read).
        retries: attempts per extension (the official makes 4).
        backoff: seconds before the second attempt, doubled before each further one.
        max_image_pixels: images are scaled down to at most this many pixels before upload.
    """

    escape_newlines_with_image = True  # the official escapes line breaks in the vision model's answers

    def __init__(self, task_kind: str, is_vl: bool = False, model_name: Optional[str] = None, *,
                 api_key: Optional[str] = None, base_url: Optional[str] = None, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 1.0, max_image_pixels: int = MAX_IMAGE_PIXELS):
        super().__init__(task_kind, is_vl)
        if retries < 1:
            raise ValueError(f"retries={retries}: need at least one attempt")
        if not timeout > 0:
            raise ValueError(f"timeout={timeout}: must be positive seconds")
        key = dashscope_api_key() if api_key is None else dashscope_api_key({"DASH_API_KEY": api_key})
        self._key = _Secret(key)
        self.model_name = check_dashscope_model(model_name, is_vl)
        self.base_url = (base_url or os.environ.get("DASH_API_URL") or DEFAULT_URL).rstrip("/")
        if not re.match(r"https?://", self.base_url):
            raise ValueError(f"DASH_API_URL {self.base_url!r} is not an http(s) URL; e.g. {DEFAULT_URL}")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_image_pixels = int(max_image_pixels)
        try:
            import dashscope  # noqa: F401 - fail here, before any model is loaded, if the SDK is missing
        except ImportError as e:
            raise ValueError(f"--prompt_extend_method dashscope needs the dashscope SDK: {SDK_HINT}") from e

    def __repr__(self) -> str:
        return (f"DashScopePromptExpander(task_kind={self.task_kind!r}, model={self.model_name!r}, "
                f"url={self.base_url!r}, timeout={self.timeout}, retries={self.retries})")

    def redact(self, text: str) -> str:
        key = self._key.reveal()
        return text.replace(key, "<DASH_API_KEY>") if key else text

    # ------------------------------------------------------------------------------------------- requests

    def complete(self, system_prompt: str, prompt: str, *, image=None, seed: int = -1) -> str:
        import dashscope

        # The SDK reads its endpoint from this module attribute, including for the image upload it does itself.
        dashscope.base_http_api_url = self.base_url
        params = dict(api_key=self._key.reveal(), seed=seed, result_format="message", request_timeout=self.timeout)
        if image is None:
            messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
            response = self._with_retries(lambda: dashscope.Generation.call(self.model_name, messages=messages,
                                                                            **params))
            return self._answer_text(response)

        fd, path = tempfile.mkstemp(prefix="wan_prompt_", suffix=".png")
        try:
            os.close(fd)
            scale_image_for_upload(image, self.max_image_pixels).save(path, format="PNG")
            messages = [{"role": "system", "content": [{"text": system_prompt}]},
                        {"role": "user", "content": [{"text": prompt}, {"image": f"file://{path}"}]}]
            response = self._with_retries(lambda: dashscope.MultiModalConversation.call(
                self.model_name, messages=messages, **params))
        finally:
            os.remove(path)
        return self._answer_text(response)

    def _with_retries(self, call):
        """``call()``'s response with HTTP 200; retries transient failures. Raises DashScopeError."""
        import requests
        from dashscope.common.error import UploadFileException

        reason = "no attempt made"
        for attempt in range(1, self.retries + 1):
            try:
                response = call()
            except requests.Timeout:
                reason = f"no answer from {self.base_url} within {self.timeout:g}s"
            except requests.ConnectionError as e:
                reason = f"cannot reach {self.base_url} ({type(e).__name__}); check the network and DASH_API_URL"
            except UploadFileException as e:
                reason = f"the image upload failed ({e})"
            else:
                status = int(response.status_code)
                if status == HTTPStatus.OK:
                    return response
                reason = f"HTTP {status} {response.code or ''}: {response.message or ''}".replace(" :", ":")
                if status == HTTPStatus.UNAUTHORIZED:
                    raise DashScopeError(f"{reason} - DashScope rejected the API key; check DASH_API_KEY")
                if status in _FINAL_STATUS or not (status in _RETRY_STATUS or status >= 500):
                    raise DashScopeError(f"{reason} (model {self.model_name!r})")
            if attempt < self.retries:
                delay = self.backoff * 2 ** (attempt - 1)
                log.info("DashScope attempt %d/%d failed (%s); retrying in %.1fs", attempt, self.retries,
                         self.redact(reason), delay)
                time.sleep(delay)
        raise DashScopeError(f"{reason} (after {self.retries} attempts)")

    def _answer_text(self, response) -> str:
        """The assistant's text: a string (text models) or the first text part of a content list (VL models)."""
        try:
            content = response["output"]["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise DashScopeError(f"DashScope answered without a message ({type(e).__name__}: {e})") from None
        if isinstance(content, list):
            texts = [part["text"] for part in content if isinstance(part, dict) and "text" in part]
            if not texts:
                raise DashScopeError("DashScope answered without any text part")
            content = texts[0]
        if not isinstance(content, str):
            raise DashScopeError(f"DashScope answered {type(content).__name__}, not text")
        return content
