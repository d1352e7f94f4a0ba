"""Qwen2 / Qwen2.5-Instruct causal language models as MindSpore Cells (the local prompt-extension backend).

Parameter names equal the keys of a Hugging Face ``Qwen2ForCausalLM`` checkpoint (``model.embed_tokens.weight``,
``model.layers.0.self_attn.q_proj.weight``, ``model.norm.weight``, ``lm_head.weight``), so a downloaded folder
loads by name with strict key and shape checks. All math goes through :mod:`wan.modules.kernels`, so the same
code runs on CPU (float32, the reference kernels) and on Ascend (bfloat16, fused attention).

Decoding keeps a key/value cache and computes the vocabulary projection for the last position only; the
attention mask and the positions are built on the host from the (small) padding mask, so the decode loop's only
device-to-host transfer is the last position's logits, which the token choice needs anyway.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from . import kernels as K

__all__ = ["Qwen2Config", "GenerationDefaults", "KVCache", "Qwen2ForCausalLM", "Qwen2Model", "read_hf_folder",
           "rope_cos_sin", "decoder_mask", "positions_from_mask", "choose_next_tokens"]


# ------------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class Qwen2Config:
    """The fields of a Hugging Face Qwen2 ``config.json`` that the network needs."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    eos_token_id: Tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config {name}={value!r} must be a positive integer")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"config num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"config head_dim={self.head_dim} must be even for rotary embeddings")

    @classmethod
    def from_dict(cls, cfg: dict, source: str = "config.json", model_types=("qwen2",)) -> "Qwen2Config":
        """Validate a parsed Qwen2 ``config.json`` (or a VL config's text part); ValueError on what we do not run."""
        model_type = cfg.get("model_type")
        if model_type not in model_types:
            hint = (" (a Qwen2.5-VL folder: use Qwen2_5_VLForConditionalGeneration)" if model_type == "qwen2_5_vl"
                    else "")
            raise ValueError(f"{source}: model_type={model_type!r} is not supported here{hint}; expected one of "
                             f"{list(model_types)} (a Qwen2 / Qwen2.5 Instruct folder from Hugging Face)")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{source}: hidden_act={act!r} is not supported; Qwen2 models use 'silu'")
        if cfg.get("use_sliding_window", False):
            raise ValueError(f"{source}: use_sliding_window=true is not supported (the released Qwen2.5 models "
                             "set it to false); set it to false in config.json")
        scaling = cfg.get("rope_scaling")
        if scaling is not None and scaling.get("rope_type", scaling.get("type")) not in ("default", "mrope"):
            raise ValueError(f"{source}: rope_scaling={scaling!r} is not supported (only plain rotary embeddings); "
                             "remove rope_scaling from config.json to run without long-context scaling")
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            eos = cfg.get("eos_token_id")
            eos = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
            return cls(vocab_size=int(cfg["vocab_size"]), hidden_size=hidden,
                       intermediate_size=int(cfg["intermediate_size"]),
                       num_hidden_layers=int(cfg["num_hidden_layers"]), num_attention_heads=heads,
                       num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                       head_dim=int(cfg.get("head_dim") or hidden // heads),
                       rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                       rope_theta=float(cfg.get("rope_theta", 10000.0)),
                       tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                       max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)), eos_token_id=eos)
        except KeyError as err:
            raise ValueError(f"{source}: required field {err.args[0]!r} is missing; the folder is not a complete "
                             "Hugging Face model") from None


@dataclass(frozen=True)
class GenerationDefaults:
    """What a ``generation_config.json`` contributes: stop and pad ids, and the sampling settings used when a
    caller asks for sampling without giving them."""
    eos_token_id: Tuple[int, ...] = ()
    pad_token_id: Optional[int] = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0

    @classmethod
    def from_dict(cls, cfg: dict, fallback_eos: Sequence[int] = ()) -> "GenerationDefaults":
        eos = cfg.get("eos_token_id")
        eos = tuple(fallback_eos) if eos is None else tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
        pad = cfg.get("pad_token_id")
        return cls(eos_token_id=eos, pad_token_id=None if pad is None else int(pad),
                   temperature=float(cfg.get("temperature") or 1.0), top_p=float(cfg.get("top_p") or 1.0),
                   top_k=int(cfg.get("top_k") or 0))


# ------------------------------------------------------------------------------------------- host helpers

def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """Rotary positions of a left-padded batch: mask int [B, L] (1 = token) -> int64 [B, L].

    Each sample counts its own tokens from 0; padded slots get 1 (their value never reaches a real token). This
    is the rule Hugging Face's ``generate`` uses, so padded and unpadded prompts decode alike.
    """
    pos = np.cumsum(mask.astype(np.int64), -1) - 1
    return np.where(mask.astype(bool), pos, 1)


def decoder_mask(mask: np.ndarray, lq: int) -> np.ndarray:
    """Causal + padding mask for the last ``lq`` of ``mask.shape[1]`` positions.

    Args:
        mask: int/bool [B, Lk] (1 = a real token), covering the cached and the new positions.
        lq: number of new (query) positions, the last ``lq`` columns.
    Returns:
        bool [B, lq, Lk]: query i (absolute index Lk - lq + i) sees key j if j <= that index and j is a token.
        A query always sees itself, so padded query rows are never empty (their outputs are discarded).
    """
    b, lk = mask.shape
    q_abs = np.arange(lk - lq, lk)
    causal = np.arange(lk)[None, :] <= q_abs[:, None]  # [lq, Lk]
    allowed = causal[None] & mask.astype(bool)[:, None, :]
    allowed[:, np.arange(lq), q_abs] = True
    return allowed


def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """float32 [head_dim / 2]: 1 / theta^(2i / head_dim), rounded as the float32 reference computes it."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / np.power(np.float32(theta), exponent, dtype=np.float32)).astype(np.float32)


def rope_cos_sin(positions: np.ndarray, inv_freq: np.ndarray) -> Tuple[Tensor, Tensor]:
    """Rotary cos/sin Tensors float32 [B, L, 1, D] (each angle in both halves).

    positions: int [B, L] (one position per token), or [B, L, D/2] (a position per token and frequency, as the
    multimodal rope of Qwen2.5-VL picks the temporal / height / width position per frequency band).
    The angles are float32 products position * inv_freq, as in the float32 reference: at 30k positions the
    rounding of the angle matters, so it is reproduced rather than improved.
    """
    pos = positions.astype(np.float32)
    freqs = (pos * inv_freq[None, None, :]) if pos.ndim == 3 else pos[..., None] * inv_freq[None, None, :]
    emb = np.concatenate([freqs, freqs], -1)[:, :, None, :]
    return Tensor(np.cos(emb).astype(np.float32)), Tensor(np.sin(emb).astype(np.float32))


def choose_next_tokens(logits: np.ndarray, do_sample: bool, temperature: float, top_k: int, top_p: float,
                       rng: Optional[np.random.Generator]) -> np.ndarray:
    """The next token of each row: logits float [B, V] -> int64 [B].

    Greedy is the first maximum (argmax). Sampling applies temperature, then top-k, then top-p (nucleus: drop the
    lowest-probability tokens whose cumulative probability is at most 1 - top_p, keeping at least one), then
    draws from the softmax with ``rng``, in the order Hugging Face's sampling applies them.
    """
    if not do_sample:
        return np.argmax(logits, -1).astype(np.int64)
    scores = logits.astype(np.float64) / float(temperature)
    v = scores.shape[-1]
    if top_k and 0 < top_k < v:
        kth = np.partition(scores, v - top_k, -1)[:, v - top_k][:, None]
        scores = np.where(scores < kth, -np.inf, scores)
    if top_p < 1.0:
        order = np.argsort(scores, -1, kind="stable")  # ascending
        ordered = np.take_along_axis(scores, order, -1)
        probs = np.exp(ordered - ordered[:, -1:])
        cum = np.cumsum(probs / probs.sum(-1, keepdims=True), -1)
        drop = cum <= 1.0 - top_p
        drop[:, -1] = False
        remove = np.zeros_like(drop)
        np.put_along_axis(remove, order, drop, -1)
        scores = np.where(remove, -np.inf, scores)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(v, p=p) for p in probs], dtype=np.int64)


class KVCache:
    """Keys and values of the positions decoded so far, one (k, v) pair per layer, each [B, L, Nkv, D].

    Appending concatenates: a prompt extension is at most a few thousand tokens, where re-allocating the cache
    per step costs less than the layer's matmuls.
    """

    def __init__(self, num_layers: int):
        self.keys: List[Optional[Tensor]] = [None] * num_layers
        self.values: List[Optional[Tensor]] = [None] * num_layers

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else int(self.keys[0].shape[1])

    def update(self, layer: int, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        """Append k, v [B, Lnew, Nkv, D] to layer ``layer``; returns the layer's full keys and values."""
        if self.keys[layer] is not None:
            k = ops.cat([self.keys[layer], k], 1)
            v = ops.cat([self.values[layer], v], 1)
        self.keys[layer], self.values[layer] = k, v
        return k, v


# -------------------------------------------------------------------------------------------------- cells

class Linear(K.Linear):
    """:class:`kernels.Linear` computed with :func:`kernels.linear_2d` (decoding multiplies one row at a time)."""

    def construct(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight_provider is None else self.weight_provider(self.weight)
        b = self.bias
        return K.linear_2d(x.astype(w.dtype), w, b)


class Embedding(nn.Cell):
    """Token embedding ``weight`` [V, C] (PyTorch's layout)."""

    def __init__(self, num: int, dim: int, dtype=ms.float32):
        super().__init__()
        self.weight = Parameter(initializer(Normal(0.02), (num, dim), dtype), name="weight")

    def construct(self, ids: Tensor) -> Tensor:
        """ids int [B, L] -> [B, L, C]."""
        return K.embedding(self.weight, ids)


class Qwen2MLP(nn.Cell):
    """down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, dim: int, hidden: int, dtype=ms.float32):
        super().__init__()
        self.gate_proj = Linear(dim, hidden, bias=False, dtype=dtype)
        self.up_proj = Linear(dim, hidden, bias=False, dtype=dtype)
        self.down_proj = Linear(hidden, dim, bias=False, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        return self.down_proj(K.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2Attention(nn.Cell):
    """Grouped-query self-attention with rotary positions; q/k/v have biases, the output projection has none."""

    def __init__(self, cfg: Qwen2Config, dtype=ms.float32):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, \
            cfg.head_dim
        dim = cfg.hidden_size
        self.q_proj = Linear(dim, self.num_heads * self.head_dim, bias=True, dtype=dtype)
        self.k_proj = Linear(dim, self.num_kv_heads * self.head_dim, bias=True, dtype=dtype)
        self.v_proj = Linear(dim, self.num_kv_heads * self.head_dim, bias=True, dtype=dtype)
        self.o_proj = Linear(self.num_heads * self.head_dim, dim, bias=False, dtype=dtype)

    def construct(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, cache: Optional[KVCache],
                  layer: int) -> Tensor:
        """x [B, L, C]; cos/sin [B, L, 1, D]; mask bool Tensor [B, L, Lcache + L] -> [B, L, C]."""
        b, l, _ = x.shape
        q = K.rotate_halves(self.q_proj(x).reshape(b, l, self.num_heads, self.head_dim), cos, sin)
        k = K.rotate_halves(self.k_proj(x).reshape(b, l, self.num_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).reshape(b, l, self.num_kv_heads, self.head_dim)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = K.masked_attention(q, k, v, mask)
        return self.o_proj(out.reshape(b, l, self.num_heads * self.head_dim))


class Qwen2DecoderLayer(nn.Cell):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: Qwen2Config, dtype=ms.float32):
        super().__init__()
        self.self_attn = Qwen2Attention(cfg, dtype)
        self.mlp = Qwen2MLP(cfg.hidden_size, cfg.intermediate_size, dtype)
        self.input_layernorm = K.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.post_attention_layernorm = K.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)

    def construct(self, x, cos, sin, mask, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen2Model(nn.Cell):
    """Token embedding, the decoder layers and the final norm (``model.*`` in the checkpoint)."""

    def __init__(self, cfg: Qwen2Config, dtype=ms.float32):
        super().__init__()
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, dtype)
        self.layers = nn.CellList([Qwen2DecoderLayer(cfg, dtype) for _ in range(cfg.num_hidden_layers)])
        self.norm = K.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)

    def construct(self, embeds: Tensor, cos: Tensor, sin: Tensor, mask: Tensor,
                  cache: Optional[KVCache] = None) -> Tensor:
        """embeds [B, L, C] -> normalised hidden states [B, L, C]."""
        x = embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache, i)
        return self.norm(x)


# --------------------------------------------------------------------------------------- folder reading

WEIGHT_INDEX = "model.safetensors.index.json"
WEIGHT_SINGLE = "model.safetensors"


def read_hf_folder(folder: str) -> Tuple[dict, dict, object]:
    """(config dict, generation_config dict or {}, checkpoint reader) of a Hugging Face model folder.

    ValueError, before any weight is read, when the folder, its config.json or its safetensors weights are
    missing (a folder with only PyTorch ``.bin`` weights is named as such).
    """
    from wan.checkpoint.safetensors_io import SafetensorsReader, ShardedSafetensorsReader

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"model folder {folder!r} does not exist or is not a folder; download the model first "
                         "(e.g. huggingface-cli download Qwen/Qwen2.5-7B-Instruct --local-dir ./Qwen2.5-7B-Instruct)")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"{folder}: has no config.json; it is not a Hugging Face model folder (or the download is "
                         "incomplete)")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    generation = {}
    gen_path = os.path.join(folder, "generation_config.json")
    if os.path.isfile(gen_path):  # optional, as in Hugging Face: stop ids then come from config.json
        try:
            with open(gen_path, encoding="utf-8") as f:
                generation = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{gen_path}: not valid JSON ({err})") from None
    if os.path.isfile(os.path.join(folder, WEIGHT_INDEX)):
        reader = ShardedSafetensorsReader(os.path.join(folder, WEIGHT_INDEX))
    elif os.path.isfile(os.path.join(folder, WEIGHT_SINGLE)):
        reader = SafetensorsReader(os.path.join(folder, WEIGHT_SINGLE))
    else:
        bins = [n for n in os.listdir(folder) if n.endswith(".bin")]
        what = (f"only PyTorch weights ({', '.join(sorted(bins)[:3])}); re-download the safetensors version"
                if bins else "no weights")
        raise ValueError(f"{folder}: has {what}: expected {WEIGHT_INDEX} with its shards or {WEIGHT_SINGLE}")
    return config, generation, reader


def load_weights(cell: nn.Cell, reader, dtype, skip: Sequence[str] = (), rename=None) -> None:
    """Copy every checkpoint tensor into the parameter of the same name, strictly.

    Args:
        dtype: MindSpore dtype of the parameters (bf16 checkpoints widen exactly to float32).
        skip: checkpoint keys that hold no parameter (e.g. ``lm_head.weight`` of a tied model).
        rename: optional function checkpoint key -> parameter name.
    ValueError listing missing, unexpected and mis-shaped tensors, before any is loaded.
    """
    from wan.checkpoint.loading import ms_dtype_name, read_param, to_ms_tensor

    params = dict(cell.parameters_and_names())
    mapping = {}
    for key in reader.keys():
        if key in skip:
            continue
        mapping[rename(key) if rename else key] = key
    missing = sorted(set(params) - set(mapping))
    unexpected = sorted(mapping[n] for n in set(mapping) - set(params))
    misshaped = [f"{mapping[n]}: checkpoint {tuple(reader.shape(mapping[n]))} vs model {tuple(params[n].shape)}"
                 for n in sorted(set(params) & set(mapping))
                 if tuple(reader.shape(mapping[n])) != tuple(params[n].shape)]
    if missing or unexpected or misshaped:
        parts = [f"{reader.path}: the weights do not match the config:"]
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:10])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:10])}")
        if misshaped:
            parts.append(f"mis-shaped {len(misshaped)}: {'; '.join(misshaped[:10])}")
        raise ValueError(" ".join(parts) + ". Check that config.json and the safetensors files belong together.")
    want = ms_dtype_name(dtype)
    for name, param in params.items():
        key = mapping[name]
        array = read_param(reader, key, want)
        param.set_data(to_ms_tensor(array, want, share=True))


def default_dtype():
    """bfloat16 on Ascend (the release's dtype), float32 on the reference (CPU) kernels, which lack bf16 math."""
    return ms.bfloat16 if K.backend() == "ascend" else ms.float32


# ------------------------------------------------------------------------------------------- the model

class Qwen2ForCausalLM(nn.Cell):
    """A Qwen2 / Qwen2.5 causal LM: ``model`` (:class:`Qwen2Model`) and ``lm_head`` (absent when tied).

    Call ``model(input_ids[, attention_mask])`` for logits; :meth:`generate` decodes with a KV cache.
    """

    def __init__(self, cfg: Qwen2Config, dtype=ms.float32, generation: Optional[GenerationDefaults] = None):
        super().__init__()
        self.config = cfg
        self.dtype = dtype
        self.generation = generation or GenerationDefaults(eos_token_id=cfg.eos_token_id)
        self.model = Qwen2Model(cfg, dtype)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size, bias=False,
                                                                      dtype=dtype)
        self._inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta)

    # ---------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(cls, folder: str, dtype=None) -> "Qwen2ForCausalLM":
        """Build from a Hugging Face folder (config.json, optional generation_config.json, model.safetensors or
        model.safetensors.index.json + shards). ``dtype``: parameter dtype, default :func:`default_dtype`."""
        from mindspore.nn.utils import no_init_parameters

        config, generation, reader = read_hf_folder(folder)
        cfg = Qwen2Config.from_dict(config, os.path.join(os.fspath(folder), "config.json"))
        gen = GenerationDefaults.from_dict(generation, cfg.eos_token_id)
        dtype = dtype or default_dtype()
        with no_init_parameters():  # the weights come from the folder: skip the random initialisation
            net = cls(cfg, dtype, gen)
        try:
            load_weights(net, reader, dtype, skip=("lm_head.weight",) if cfg.tie_word_embeddings else ())
        finally:
            reader.close()
        net.set_train(False)
        return net

    # ---------------------------------------------------------------------------------- forward

    def embed(self, input_ids: np.ndarray) -> Tensor:
        """int [B, L] -> [B, L, C]; ValueError for an id outside the vocabulary (a gather would not check)."""
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}); got {input_ids.min()} .. "
                             f"{input_ids.max()} (a tokenizer that does not belong to this model?)")
        return self.model.embed_tokens(Tensor(np.ascontiguousarray(input_ids, dtype=np.int32)))

    def hidden_states(self, embeds: Tensor, mask: np.ndarray, positions: np.ndarray,
                      cache: Optional[KVCache] = None) -> Tensor:
        """embeds [B, L, C]; mask [B, Lcache + L] (1 = token); positions int [B, L] -> final hidden [B, L, C]."""
        cos, sin = rope_cos_sin(positions, self._inv_freq)
        allowed = decoder_mask(mask, embeds.shape[1])
        assert allowed.any(-1).all()
        return self.model(embeds, cos, sin, Tensor(allowed), cache)  # uploaded once for all layers

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden [B, L, C] -> float32 logits [B, L, V]."""
        w = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return K.linear_2d(hidden.astype(w.dtype), w).astype(ms.float32)

    def construct(self, input_ids, attention_mask=None, position_ids=None) -> Tensor:
        """Logits of every position.

        Args:
            input_ids: int [B, L] (numpy, list or Tensor); left-padded when ``attention_mask`` is given.
            attention_mask: optional int [B, L], 1 = token, 0 = padding.
            position_ids: optional int [B, L]; default: counted from the mask (see :func:`positions_from_mask`).
        Returns:
            float32 Tensor [B, L, V]. Rows of padded positions are meaningless.
        """
        ids = _as_ids(input_ids)
        mask = np.ones_like(ids) if attention_mask is None else _as_ids(attention_mask, "attention_mask", ids.shape)
        pos = positions_from_mask(mask) if position_ids is None else _as_ids(position_ids, "position_ids", ids.shape)
        return self.logits(self.hidden_states(self.embed(ids), mask, pos))

    # ---------------------------------------------------------------------------------- decoding

    def generate(self, input_ids, max_new_tokens: int = 512, do_sample: bool = False,
                 eos_token_id: Union[None, int, Sequence[int]] = None, attention_mask=None,
                 pad_token_id: Optional[int] = None, temperature: Optional[float] = None,
                 top_p: Optional[float] = None, top_k: Optional[int] = None, seed: int = -1) -> np.ndarray:
        """Decode up to ``max_new_tokens`` tokens after each prompt, with a KV cache.

        Args:
            input_ids: int [B, L], left-padded if ragged (give ``attention_mask``).
            do_sample: False (default) = greedy, deterministic. True = sample with temperature / top_k / top_p
                (None: the folder's generation_config values) from a numpy generator seeded with ``seed``
                (``seed < 0``: fresh entropy).
            eos_token_id: stop id(s); default: the folder's generation_config (Qwen2.5: <|im_end|>, <|endoftext|>).
            pad_token_id: written after a row has stopped; default generation_config's, else the first eos id.
        Returns:
            int64 numpy [B, L + n]: the prompts followed by the n <= max_new_tokens decoded tokens (a row that
            stopped early is filled with ``pad_token_id``); decoding ends when every row has emitted a stop id.
        """
        ids = _as_ids(input_ids)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
        mask = np.ones_like(ids) if attention_mask is None else _as_ids(attention_mask, "attention_mask", ids.shape)
        positions = positions_from_mask(mask)
        return self._decode(ids, mask, lambda cache: self.hidden_states(self.embed(ids), mask, positions, cache),
                            positions[:, -1:] + 1, max_new_tokens, do_sample, eos_token_id, pad_token_id,
                            temperature, top_p, top_k, seed)

    def _decode(self, ids, mask, prefill, next_pos, max_new_tokens, do_sample, eos_token_id, pad_token_id,
                temperature, top_p, top_k, seed):
        """The decode loop shared with the VL model: ``prefill(cache)`` runs the prompt and returns the hidden
        states [B, L, C]; each later step embeds one token per row at that row's next position (``next_pos``
        int [B, 1] for the first new token, then + 1 per step)."""
        gen = self.generation
        eos = gen.eos_token_id if eos_token_id is None else \
            tuple(int(e) for e in ([eos_token_id] if isinstance(eos_token_id, (int, np.integer)) else eos_token_id))
        pad = pad_token_id if pad_token_id is not None else gen.pad_token_id
        if pad is None:
            pad = eos[0] if eos else 0
        if do_sample:
            temperature = gen.temperature if temperature is None else float(temperature)
            top_p = gen.top_p if top_p is None else float(top_p)
            top_k = gen.top_k if top_k is None else int(top_k)
            if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
                raise ValueError(f"sampling needs temperature > 0, 0 < top_p <= 1, top_k >= 0; got "
                                 f"temperature={temperature}, top_p={top_p}, top_k={top_k}")
        rng = np.random.default_rng(None if seed is None or seed < 0 else int(seed)) if do_sample else None
        cache = KVCache(self.config.num_hidden_layers)
        hidden = prefill(cache)
        out = [ids]
        done = np.zeros(ids.shape[0], dtype=bool)
        eos_arr = np.asarray(eos, dtype=np.int64)
        for step in range(max_new_tokens):
            logits = self.logits(hidden[:, -1:]).asnumpy()[:, 0]  # the one device -> host transfer per token
            token = choose_next_tokens(logits, do_sample, temperature, top_k, top_p, rng)
            token = np.where(done, pad, token)
            out.append(token[:, None])
            done |= np.isin(token, eos_arr)
            if done.all() or step == max_new_tokens - 1:
                break
            mask = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], 1)
            hidden = self.hidden_states(self.embed(token[:, None]), mask, next_pos, cache)
            next_pos = next_pos + 1
        return np.concatenate(out, 1)


def _as_ids(x, name="input_ids", shape=None) -> np.ndarray:
    """int64 numpy [B, L] from a list, numpy array or Tensor; ValueError on a wrong rank or shape."""
    arr = x.asnumpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty integer array [batch, length]; got shape {arr.shape}, "
                         f"dtype {arr.dtype}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(shape)} (that of input_ids)")
    return arr.astype(np.int64)
