"""Qwen2.5-VL (vision-language) as MindSpore Cells, plus its image preprocessing in numpy/PIL.

Parameter names equal the keys of the released Hugging Face checkpoints (``visual.patch_embed.proj.weight``,
``visual.blocks.0.attn.qkv.weight``, ``visual.merger.mlp.0.weight``, ``model.layers.0.self_attn.q_proj.weight``,
``lm_head.weight``); checkpoints written with the newer ``model.language_model.*`` / ``model.visual.*`` names load
too. The language model is :mod:`wan.modules.qwen2`'s decoder with the multimodal rope: every rotary frequency
band takes the temporal, height or width position of its token (``mrope_section``). The vision tower embeds
14x14x2 patches, runs windowed attention (112-pixel windows) in most blocks and full attention per image in a
few, and merges 2x2 patches into one language-model token.

All index bookkeeping (window order, rotary positions, the multimodal position index) is host numpy on small
integer arrays, computed once per image; the device sees gathers by those indices, the matmuls and attention.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from . import kernels as K
from .qwen2 import (GenerationDefaults, Linear, Qwen2Config, Qwen2ForCausalLM, _as_ids, default_dtype,
                    load_weights, positions_from_mask, read_hf_folder)

__all__ = ["VisionConfig", "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VisionTransformer",
           "QwenVLImageProcessor", "smart_resize", "rope_index", "window_index"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ------------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: float = 4
    window_size: int = 112
    fullatt_block_indexes: Tuple[int, ...] = (7, 15, 23, 31)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class Qwen2_5_VLConfig:
    text: Qwen2Config
    vision: VisionConfig
    mrope_section: Tuple[int, int, int]
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int

    @classmethod
    def from_dict(cls, cfg: dict, source: str = "config.json") -> "Qwen2_5_VLConfig":
        """Validate a Qwen2.5-VL ``config.json``: text fields at the top level (the release) or under
        ``text_config`` (transformers >= 4.52), the vision tower under ``vision_config``."""
        if cfg.get("model_type") != "qwen2_5_vl":
            hint = " (a text-only Qwen2 folder: use Qwen2ForCausalLM)" if cfg.get("model_type") == "qwen2" else ""
            raise ValueError(f"{source}: model_type={cfg.get('model_type')!r} is not 'qwen2_5_vl'{hint}; expected a "
                             "Qwen2.5-VL Instruct folder from Hugging Face")
        text = {k: v for k, v in cfg.items() if k not in ("text_config", "vision_config")}
        text.update(cfg.get("text_config") or {})
        text["model_type"] = "qwen2_5_vl"
        try:
            # The VL attention always uses hidden / heads as its head size.
            text["head_dim"] = int(text["hidden_size"]) // int(text["num_attention_heads"])
        except KeyError as err:
            raise ValueError(f"{source}: required field {err.args[0]!r} is missing") from None
        text_cfg = Qwen2Config.from_dict(text, source, model_types=("qwen2_5_vl",))
        scaling = text.get("rope_scaling") or {}
        section = scaling.get("mrope_section")
        if not section or len(section) != 3 or sum(section) * 2 != text_cfg.head_dim:
            raise ValueError(f"{source}: rope_scaling.mrope_section={section!r} must be 3 sizes summing to head_dim/2 "
                             f"= {text_cfg.head_dim // 2}")
        v = cfg.get("vision_config")
        if not isinstance(v, dict):
            raise ValueError(f"{source}: has no vision_config; the folder is not a complete Qwen2.5-VL model")
        if v.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: vision_config.hidden_act={v.get('hidden_act')!r} is not supported ('silu')")
        try:
            vision = VisionConfig(depth=int(v["depth"]), hidden_size=int(v["hidden_size"]),
                                  intermediate_size=int(v["intermediate_size"]), num_heads=int(v["num_heads"]),
                                  out_hidden_size=int(v["out_hidden_size"]),
                                  in_channels=int(v.get("in_channels", v.get("in_chans", 3))),
                                  patch_size=int(v.get("patch_size", 14)),
                                  spatial_merge_size=int(v.get("spatial_merge_size", 2)),
                                  temporal_patch_size=int(v.get("temporal_patch_size", 2)),
                                  tokens_per_second=float(v.get("tokens_per_second", 4)),
                                  window_size=int(v.get("window_size", 112)),
                                  fullatt_block_indexes=tuple(int(i) for i in v.get("fullatt_block_indexes", ())))
        except KeyError as err:
            raise ValueError(f"{source}: vision_config lacks {err.args[0]!r}") from None
        if vision.out_hidden_size != text_cfg.hidden_size:
            raise ValueError(f"{source}: vision_config.out_hidden_size={vision.out_hidden_size} differs from the text "
                             f"hidden_size={text_cfg.hidden_size}")
        if vision.hidden_size % vision.num_heads or vision.head_dim % 4:
            raise ValueError(f"{source}: vision hidden_size={vision.hidden_size} / num_heads={vision.num_heads} must "
                             "give a head size divisible by 4 (2-D rotary embedding)")
        try:
            return cls(text=text_cfg, vision=vision, mrope_section=tuple(int(s) for s in section),
                       image_token_id=int(cfg["image_token_id"]), video_token_id=int(cfg.get("video_token_id", -1)),
                       vision_start_token_id=int(cfg["vision_start_token_id"]))
        except KeyError as err:
            raise ValueError(f"{source}: required field {err.args[0]!r} is missing") from None


# ---------------------------------------------------------------------------------- image preprocessing

def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280, at_least_factor: bool = False) -> Tuple[int, int]:
    """The (height, width) Qwen2VLImageProcessor resizes to: both multiples of ``factor`` (patch * merge), the
    area within [min_pixels, max_pixels], the aspect ratio kept as closely as that allows.

    Rule: round each side to the nearest multiple; if the area is too large, scale both sides by
    sqrt(area / max_pixels) and round down; if too small, scale up by sqrt(min_pixels / area) and round up.
    """
    if min(height, width) < 1:
        raise ValueError(f"image size {width}x{height} is empty")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio {max(height, width) / min(height, width):.1f} exceeds 200; crop the "
                         "image to a less extreme shape")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if at_least_factor:  # qwen_vl_utils.fetch_image's variant: a side never rounds down to 0
        h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class QwenVLImageProcessor:
    """Images -> (pixel_values, image_grid_thw) as Hugging Face's (PIL-based) Qwen2VLImageProcessor makes them.

    Per image: RGB, bicubic resize (PIL) to :func:`smart_resize`, x / 255, (x - mean) / std with the CLIP
    statistics, the frame repeated to fill the temporal patch, then patches flattened in the vision tower's
    order: merge-window rows, merge-window columns, the 2x2 patches inside, and per patch (channel, time, y, x).
    """

    def __init__(self, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280, patch_size: int = 14,
                 merge_size: int = 2, temporal_patch_size: int = 2, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self.patch_size, self.merge_size, self.temporal_patch_size = patch_size, merge_size, temporal_patch_size
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def preprocess_one(self, image) -> Tuple[np.ndarray, np.ndarray]:
        """PIL image -> pixel_values float32 [t*h*w, C*T*P*P], grid int64 [3] (t, h, w in patches)."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise ValueError(f"expected a PIL image, got {type(image).__name__}")
        image = image.convert("RGB") if image.mode != "RGB" else image
        p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
        h, w = smart_resize(image.height, image.width, p * m, self.min_pixels, self.max_pixels)
        arr = np.asarray(image.resize((w, h), Image.BICUBIC), dtype=np.uint8)
        x = (arr.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
        x = ((x - self.mean) / self.std).transpose(2, 0, 1)  # [C, H, W]
        frames = np.repeat(x[None], tp, 0)  # one image fills the temporal patch with copies of itself
        c, gh, gw = x.shape[0], h // p, w // p
        patches = frames.reshape(1, tp, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return np.ascontiguousarray(patches.reshape(gh * gw, c * tp * p * p)), np.array([1, gh, gw], np.int64)

    def __call__(self, images: Sequence) -> Tuple[np.ndarray, np.ndarray]:
        """A list of PIL images -> pixel_values [sum t*h*w, C*T*P*P], image_grid_thw int64 [n, 3]."""
        outs = [self.preprocess_one(im) for im in images]
        return np.concatenate([o[0] for o in outs]), np.stack([o[1] for o in outs])


# ------------------------------------------------------------------------------------- host index helpers

def _check_grid(grid_thw, merge: int) -> np.ndarray:
    grid = np.asarray(grid_thw.asnumpy() if isinstance(grid_thw, Tensor) else grid_thw, dtype=np.int64)
    if grid.ndim != 2 or grid.shape[1] != 3 or (grid < 1).any() or (grid[:, 1:] % merge).any():
        raise ValueError(f"image_grid_thw must be int [n, 3] of positive (t, h, w) with h, w multiples of {merge}; "
                         f"got {grid.tolist()}")
    return grid


def window_index(grid: np.ndarray, window: int, merge: int) -> Tuple[np.ndarray, np.ndarray]:
    """Window order of the merged tokens and the window boundaries in patch units.

    Args:
        grid: int [n, 3] (t, h, w) in patches; window: merged tokens per window side.
    Returns:
        index int64 [sum t*h*w / merge^2]: merged-token ids (raster order per image, images in order) listed window
        by window (windows in raster order, tokens in raster order inside, edge windows smaller);
        cu int64 [n_windows + 1]: cumulative window lengths in patches, empty windows dropped.
    """
    order, cu, offset = [], [0], 0
    for t, h, w in grid:
        gh, gw = h // merge, w // merge
        ids = np.arange(t * gh * gw).reshape(t, gh, gw)
        ph, pw = -gh % window or window, -gw % window or window
        # the reference always pads by at least one window slot (a full extra window of padding when the grid
        # divides evenly); padded slots are dropped, so only the window count, not the order, depends on it
        padded = np.full((t, gh + ph, gw + pw), -1, np.int64)
        padded[:, :gh, :gw] = ids
        nh, nw = (gh + ph) // window, (gw + pw) // window
        tiles = padded.reshape(t, nh, window, nw, window).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, -1)
        lens = (tiles >= 0).sum(-1).reshape(-1)
        flat = tiles.reshape(-1)
        order.append(flat[flat >= 0] + offset)
        for n in lens:
            if n:
                cu.append(cu[-1] + int(n) * merge * merge)
        offset += t * gh * gw
    return np.concatenate(order), np.asarray(cu, np.int64)


def vision_rope_positions(grid: np.ndarray, merge: int) -> np.ndarray:
    """(row, column) of every patch in the tower's input order (2x2 merge groups contiguous): int64 [S, 2]."""
    out = []
    for t, h, w in grid:
        rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
        cols = np.broadcast_to(np.arange(w)[None, :], (h, w))
        pair = [a.reshape(h // merge, merge, w // merge, merge).transpose(0, 2, 1, 3).reshape(-1) for a in (rows, cols)]
        out.append(np.tile(np.stack(pair, -1), (t, 1)))
    return np.concatenate(out)


def rope_index(input_ids: np.ndarray, mask: np.ndarray, grid: Optional[np.ndarray], cfg: Qwen2_5_VLConfig
               ) -> Tuple[np.ndarray, np.ndarray]:
    """The multimodal rope positions of a (left-padded) batch and each row's offset for decoding.

    Text tokens advance all three coordinates together; the tokens of an image share one temporal position
    (images: time 0) and take their merged-patch row / column, offset by the position where the image starts;
    text after an image continues from the largest position so far + 1. Images are consumed in order across
    the batch. Without images the positions count the tokens of each row (padding: 1).

    Args:
        input_ids, mask: int [B, L]; grid: int [n_images, 3] or None.
    Returns:
        positions int64 [3, B, L] (padding slots: 1); deltas int64 [B, 1] = max position + 1 - L, so the first
        decoded token of row b sits at L + deltas[b].
    """
    b, l = input_ids.shape
    merge = cfg.vision.spatial_merge_size
    if grid is None or not (input_ids == cfg.image_token_id).any():
        pos = np.broadcast_to(positions_from_mask(mask)[None], (3, b, l)).copy()
        return pos, pos.max(0).max(-1, keepdims=True) + 1 - l
    pos = np.ones((3, b, l), np.int64)
    deltas = np.zeros((b, 1), np.int64)
    image = 0
    for i in range(b):
        keep = mask[i].astype(bool)
        toks = input_ids[i][keep]
        starts = np.nonzero(toks == cfg.vision_start_token_id)[0]
        following = toks[starts[starts + 1 < len(toks)] + 1]
        if (following == cfg.video_token_id).any():
            raise ValueError("video inputs are not supported; pass images only")
        parts, st = [], 0
        for _ in range(int((following == cfg.image_token_id).sum())):
            ed = int(np.nonzero(toks[st:] == cfg.image_token_id)[0][0]) + st
            if image >= len(grid):
                raise ValueError(f"the prompts hold more images than image_grid_thw's {len(grid)} rows")
            t, h, w = int(grid[image][0]), int(grid[image][1]) // merge, int(grid[image][2]) // merge
            image += 1
            base = parts[-1].max() + 1 if parts else 0
            parts.append(np.broadcast_to(np.arange(ed - st)[None], (3, ed - st)) + base)
            t_idx = np.zeros((t, h * w), np.int64)  # images: no time step (second_per_grid_t = 0)
            h_idx = np.broadcast_to(np.arange(h)[None, :, None], (t, h, w)).reshape(-1)
            w_idx = np.broadcast_to(np.arange(w)[None, None, :], (t, h, w)).reshape(-1)
            parts.append(np.stack([t_idx.reshape(-1), h_idx, w_idx]) + (ed - st) + base)
            st = ed + t * h * w
        if st < len(toks):
            base = parts[-1].max() + 1 if parts else 0
            parts.append(np.broadcast_to(np.arange(len(toks) - st)[None], (3, len(toks) - st)) + base)
        row = np.concatenate(parts, 1)
        pos[:, i, keep] = row
        deltas[i, 0] = row.max() + 1 - l
    return pos, deltas


class SegmentPlan:
    """How to run bidirectional attention inside each segment [cu[i], cu[i+1]) of a packed sequence of S tokens.

    Segments of equal length run as one batch (gathered to [G, len, N, D]), so a 720p image's ~80 windows cost a
    handful of attention calls rather than one per window; the gather indices are uploaded once per image batch
    and reused by every block.
    """

    def __init__(self, cu: np.ndarray):
        lens = np.diff(cu)
        self.single = len(lens) == 1
        self.groups: List[Tuple[Tensor, int, int]] = []  # (token indices [G * len], G, len)
        order = []
        if not self.single:
            for n in np.unique(lens):
                starts = cu[:-1][lens == n]
                idx = (starts[:, None] + np.arange(n)[None]).reshape(-1)
                self.groups.append((Tensor(idx.astype(np.int32)), len(starts), int(n)))
                order.append(idx)
            self.inverse = Tensor(np.argsort(np.concatenate(order), kind="stable").astype(np.int32))

    def attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q, k, v: [S, N, D] -> [S, N, D]."""
        if self.single:
            return K.attention(q[None], k[None], v[None])[0]
        outs = []
        for idx, g, n in self.groups:
            qg, kg, vg = (ops.gather(x, idx, 0).reshape(g, n, x.shape[1], x.shape[2]) for x in (q, k, v))
            outs.append(K.attention(qg, kg, vg).reshape(g * n, q.shape[1], q.shape[2]))
        return ops.gather(ops.cat(outs, 0), self.inverse, 0)


# ------------------------------------------------------------------------------------------- vision cells

class _PatchConv(nn.Cell):
    """A Conv3d with kernel == stride over one (C, T, P, P) patch, as a matmul: ``weight`` [E, C, T, P, P]."""

    def __init__(self, cfg: VisionConfig, dtype):
        super().__init__()
        shape = (cfg.hidden_size, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.weight = Parameter(initializer(Normal(0.02), shape, dtype), name="weight")

    def construct(self, x: Tensor) -> Tensor:
        """x [S, C*T*P*P] (the processor's flattening, channel slowest) -> [S, E]."""
        w = self.weight.reshape(self.weight.shape[0], -1)
        return K.linear_2d(x.astype(w.dtype), w)


class VisionPatchEmbed(nn.Cell):
    def __init__(self, cfg: VisionConfig, dtype):
        super().__init__()
        self.proj = _PatchConv(cfg, dtype)

    def construct(self, x):
        return self.proj(x)


class VisionMLP(nn.Cell):
    """down(silu(gate(x)) * up(x)) with biases."""

    def __init__(self, dim: int, hidden: int, dtype):
        super().__init__()
        self.gate_proj = Linear(dim, hidden, bias=True, dtype=dtype)
        self.up_proj = Linear(dim, hidden, bias=True, dtype=dtype)
        self.down_proj = Linear(hidden, dim, bias=True, dtype=dtype)

    def construct(self, x):
        return self.down_proj(K.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionAttention(nn.Cell):
    def __init__(self, cfg: VisionConfig, dtype):
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=True, dtype=dtype)
        self.proj = Linear(cfg.hidden_size, cfg.hidden_size, bias=True, dtype=dtype)

    def construct(self, x: Tensor, cos: Tensor, sin: Tensor, plan: SegmentPlan) -> Tensor:
        """x [S, C]; cos/sin [1, S, 1, D]; plan: which tokens attend to which -> [S, C]."""
        s = x.shape[0]
        qkv = self.qkv(x).reshape(s, 3, self.num_heads, self.head_dim)
        q = K.rotate_halves(qkv[:, 0][None], cos, sin)[0]
        k = K.rotate_halves(qkv[:, 1][None], cos, sin)[0]
        out = plan.attention(q, k, qkv[:, 2])
        return self.proj(out.reshape(s, self.num_heads * self.head_dim))


class VisionBlock(nn.Cell):
    def __init__(self, cfg: VisionConfig, dtype):
        super().__init__()
        self.norm1 = K.RMSNorm(cfg.hidden_size, 1e-6, dtype)
        self.norm2 = K.RMSNorm(cfg.hidden_size, 1e-6, dtype)
        self.attn = VisionAttention(cfg, dtype)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size, dtype)

    def construct(self, x, cos, sin, plan):
        x = x + self.attn(self.norm1(x), cos, sin, plan)
        return x + self.mlp(self.norm2(x))


class _GELU(nn.Cell):
    def construct(self, x):
        return K.gelu_erf(x)


class PatchMerger(nn.Cell):
    """RMS norm, then each 2x2 group of patches (concatenated) through Linear - GELU - Linear."""

    def __init__(self, cfg: VisionConfig, dtype):
        super().__init__()
        self.group = cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.ln_q = K.RMSNorm(cfg.hidden_size, 1e-6, dtype)
        self.mlp = nn.CellList([Linear(self.group, self.group, bias=True, dtype=dtype), _GELU(),
                                Linear(self.group, cfg.out_hidden_size, bias=True, dtype=dtype)])

    def construct(self, x: Tensor) -> Tensor:
        """x [S, C] -> [S / merge^2, out_hidden]."""
        x = self.ln_q(x).reshape(-1, self.group)
        return self.mlp[2](self.mlp[1](self.mlp[0](x)))


class Qwen2_5_VisionTransformer(nn.Cell):
    """The vision tower (``visual.*``): patch embedding, blocks (windowed except ``fullatt_block_indexes``),
    patch merger. Output rows are in the order of the image tokens in the prompt."""

    def __init__(self, cfg: VisionConfig, dtype=ms.float32):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = VisionPatchEmbed(cfg, dtype)
        self.blocks = nn.CellList([VisionBlock(cfg, dtype) for _ in range(cfg.depth)])
        self.merger = PatchMerger(cfg, dtype)
        rot = cfg.head_dim // 2  # half the head rotates with the row, half with the column
        exponent = np.arange(0, rot, 2, dtype=np.int64).astype(np.float32) / np.float32(rot)
        self._inv_freq = (np.float32(1.0) / np.power(np.float32(10000.0), exponent, dtype=np.float32))

    def construct(self, pixel_values, grid_thw) -> Tensor:
        """pixel_values [S, C*T*P*P] (numpy or Tensor); grid_thw int [n, 3] -> [S / merge^2, out_hidden]."""
        cfg = self.cfg
        merge, unit = cfg.spatial_merge_size, cfg.spatial_merge_size ** 2
        grid = _check_grid(grid_thw, merge)
        pixels = pixel_values if isinstance(pixel_values, Tensor) else Tensor(np.asarray(pixel_values, np.float32))
        s = int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum())
        want = cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size ** 2
        if tuple(pixels.shape) != (s, want):
            raise ValueError(f"pixel_values has shape {tuple(pixels.shape)} but image_grid_thw {grid.tolist()} needs "
                             f"({s}, {want})")
        order, cu_windows = window_index(grid, cfg.window_size // merge // cfg.patch_size, merge)
        patch_order = (order[:, None] * unit + np.arange(unit)[None]).reshape(-1)
        # rotary angles of each patch's (row, column), in window order
        rc = vision_rope_positions(grid, merge)[patch_order].astype(np.float32)
        freqs = np.concatenate([rc[:, :1] * self._inv_freq[None], rc[:, 1:] * self._inv_freq[None]], -1)
        emb = np.concatenate([freqs, freqs], -1)[None, :, None, :]
        cos, sin = Tensor(np.cos(emb).astype(np.float32)), Tensor(np.sin(emb).astype(np.float32))
        per_frame = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])
        cu_full = np.concatenate([[0], np.cumsum(per_frame)]).astype(np.int64)
        full, windows = SegmentPlan(cu_full), SegmentPlan(cu_windows)
        x = ops.gather(self.patch_embed(pixels), Tensor(patch_order.astype(np.int32)), 0)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, full if i in cfg.fullatt_block_indexes else windows)
        merged = self.merger(x)
        return ops.gather(merged, Tensor(np.argsort(order).astype(np.int32)), 0)


# ------------------------------------------------------------------------------------------- the model

def _rename(key: str) -> str:
    """Checkpoint key -> our name: newer transformers write model.language_model.* and model.visual.*."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    if key.startswith("model.visual."):
        return "visual." + key[len("model.visual."):]
    return key


class Qwen2_5_VLForConditionalGeneration(Qwen2ForCausalLM):
    """Qwen2.5-VL: ``visual`` (:class:`Qwen2_5_VisionTransformer`), ``model`` (the Qwen2 decoder) and
    ``lm_head`` (absent when tied). Image features replace the prompt's image-pad token embeddings."""

    def __init__(self, cfg: Qwen2_5_VLConfig, dtype=ms.float32, generation: Optional[GenerationDefaults] = None):
        super().__init__(cfg.text, dtype, generation)
        self.vl_config = cfg
        self.visual = Qwen2_5_VisionTransformer(cfg.vision, dtype)
        # frequency band -> which of (time, row, column) positions it rotates with
        self._band = np.repeat(np.arange(3), cfg.mrope_section)

    @classmethod
    def from_pretrained(cls, folder: str, dtype=None) -> "Qwen2_5_VLForConditionalGeneration":
        """Build from a Hugging Face Qwen2.5-VL folder (config.json, generation_config.json, safetensors)."""
        from mindspore.nn.utils import no_init_parameters

        config, generation, reader = read_hf_folder(folder)
        cfg = Qwen2_5_VLConfig.from_dict(config, os.path.join(os.fspath(folder), "config.json"))
        gen = GenerationDefaults.from_dict(generation, cfg.text.eos_token_id)
        dtype = dtype or default_dtype()
        with no_init_parameters():
            net = cls(cfg, dtype, gen)
        try:
            tied = ("lm_head.weight",) if cfg.text.tie_word_embeddings else ()
            load_weights(net, reader, dtype, skip=tied, rename=_rename)
        finally:
            reader.close()
        net.set_train(False)
        return net

    # ---------------------------------------------------------------------------------- inputs

    def _inputs(self, input_ids, attention_mask, pixel_values, image_grid_thw):
        """Validated ids, mask, merged embeddings [B, L, C] and mrope positions [3, B, L] + deltas [B, 1]."""
        cfg = self.vl_config
        ids = _as_ids(input_ids)
        mask = np.ones_like(ids) if attention_mask is None else _as_ids(attention_mask, "attention_mask", ids.shape)
        n_pad = int((ids == cfg.image_token_id).sum())
        embeds = self.embed(ids)
        grid = None
        if pixel_values is not None or image_grid_thw is not None:
            if pixel_values is None or image_grid_thw is None:
                raise ValueError("pass pixel_values and image_grid_thw together")
            grid = _check_grid(image_grid_thw, cfg.vision.spatial_merge_size)
            n_feat = int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum()) // cfg.vision.spatial_merge_size ** 2
            if n_feat != n_pad:
                raise ValueError(f"the prompts hold {n_pad} image tokens but the images give {n_feat} features; "
                                 "expand each <|image_pad|> to t*h*w/4 copies (see QwenVLImageProcessor)")
            feats = self.visual(pixel_values, grid).astype(embeds.dtype)  # [n_feat, C]
            b, l, c = embeds.shape
            # one gather places text rows and image rows: index b*l + k picks the k-th image feature
            index = np.arange(b * l)
            index[np.flatnonzero(ids.reshape(-1) == cfg.image_token_id)] = b * l + np.arange(n_feat)
            embeds = ops.gather(ops.cat([embeds.reshape(b * l, c), feats], 0), Tensor(index.astype(np.int32)),
                                0).reshape(b, l, c)
        elif n_pad:
            raise ValueError(f"the prompts hold {n_pad} image tokens but no pixel_values were given")
        pos3, deltas = rope_index(ids, mask, grid, cfg)
        return ids, mask, embeds, pos3, deltas

    def _band_positions(self, pos3: np.ndarray) -> np.ndarray:
        """[3, B, L] -> per-frequency positions [B, L, D/2]."""
        return pos3[self._band].transpose(1, 2, 0)

    def construct(self, input_ids, pixel_values=None, image_grid_thw=None, attention_mask=None) -> Tensor:
        """Logits of every position.

        Args:
            input_ids: int [B, L], each image as vision-start, t*h*w/4 image pads, vision-end (left-padded when
                ``attention_mask`` is given); pixel_values float [sum t*h*w, C*T*P*P] and image_grid_thw int
                [n, 3] from :class:`QwenVLImageProcessor`, images in prompt order.
        Returns:
            float32 Tensor [B, L, V].
        """
        _, mask, embeds, pos3, _ = self._inputs(input_ids, attention_mask, pixel_values, image_grid_thw)
        return self.logits(self.hidden_states(embeds, mask, self._band_positions(pos3)))

    def generate(self, input_ids, max_new_tokens: int = 512, do_sample: bool = False, eos_token_id=None,
                 attention_mask=None, pixel_values=None, image_grid_thw=None, pad_token_id=None,
                 temperature=None, top_p=None, top_k=None, seed: int = -1) -> np.ndarray:
        """As :meth:`Qwen2ForCausalLM.generate`, with optional images. The first new token of row b sits at
        rope position max(prompt positions) + 1, then one more per token (text advances all three together).

        Returns int64 numpy [B, L + n]."""
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
        ids, mask, embeds, pos3, deltas = self._inputs(input_ids, attention_mask, pixel_values, image_grid_thw)
        band = self._band_positions(pos3)
        return self._decode(ids, mask, lambda cache: self.hidden_states(embeds, mask, band, cache),
                            ids.shape[1] + deltas, max_new_tokens, do_sample, eos_token_id, pad_token_id,
                            temperature, top_p, top_k, seed)
