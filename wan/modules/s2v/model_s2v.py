"""The S2V-14B speech-to-video DiT as a MindSpore Cell, built on the blocks of ``wan/modules/model.py``.

What differs from the text-to-video DiT, and where it lives:

- token layout [noisy | reference | motion]: the reference latent and the frame-packed motion latents
  (``motioner.FramePackMotioner``) are appended to the noisy tokens, each run tagged by a learned token-type
  vector (``trainable_cond_mask``, ids 0 / 1 / 2); pose conditions (``cond_encoder``) add to the noisy tokens;
- segment-wise modulation: with ``zero_timestep`` the noisy tokens are modulated by the timestep and the
  reference and motion tokens by timestep 0 (the ``segments`` seam of ``model._Step``; the blocks are the
  DiT's own ``WanAttentionBlock``);
- rope positions: noisy (f, h, w) from 0, the reference frame at time 30, motion tokens at negative times with
  spatial positions spread over the full grid; built once per call as cos/sin per token (float32 on Ascend,
  float64 on the reference path), never as a complex table per head;
- audio (``audio_modules``): the causal audio encoder turns wav2vec2 features into per-frame tokens, and after
  the chosen blocks an injector adds cross-attention to the frame's audio tokens (adaptive norm from its global
  audio token) to the noisy tokens.

Nothing is stored on the Cell during a call: every per-call value is a local or travels in ``_Step``.
Parameter names equal the official keys (the WanModel keys plus ``casual_audio_encoder.*``, ``audio_injector.*``,
``frame_packer.*``, ``cond_encoder.*``, ``trainable_cond_mask.*``).
"""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from .. import kernels
from ..kernels import PatchEmbed3d
from ..model import WanModel, _Step, _round_up
from .audio_modules import AudioInjector_WAN, CausalAudioEncoder, causal_audio_length
from .motioner import FramePackMotioner, Grid, sampled_positions

__all__ = ["WanModel_S2V", "OFFICIAL_DEFAULTS", "s2v_rope_tables"]

logger = logging.getLogger(__name__)

# The official constructor's defaults: a config.json that omits a key gets these, as the official loader does.
OFFICIAL_DEFAULTS = dict(
    cond_dim=0, audio_dim=5120, num_audio_token=4, enable_adain=False, adain_mode="attn_norm",
    audio_inject_layers=[0, 4, 8, 12, 16, 20, 24, 27], zero_init=False, zero_timestep=False, enable_motioner=True,
    add_last_motion=True, enable_tsm=False, trainable_token_pos_emb=False, motion_token_num=1024,
    enable_framepack=False, framepack_drop_mode="drop", model_type="s2v", patch_size=(1, 2, 2), text_len=512,
    in_dim=16, dim=2048, ffn_dim=8192, freq_dim=256, text_dim=4096, out_dim=16, num_heads=16, num_layers=32,
    window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)

REF_TIME_POSITION = 30  # the reference frame's rope time index (official)
TOKEN_NOISY, TOKEN_REF, TOKEN_MOTION = 0, 1, 2


def _axis_tables(grid: Grid, freqs: np.ndarray, head_dim: int):
    """Per-axis rotary angles of one grid: (time [nf, c_f], rows [nh, c_h], columns [nw, c_w]), float64.

    Channel pairs split (c - 2(c//3), c//3, c//3) over (time, rows, columns), c = head_dim // 2; a negative time
    position rotates backwards (the official conjugate).
    """
    pf, ph, pw = grid
    c = head_dim // 2
    ff, fh, fw = np.split(freqs, np.cumsum((c - 2 * (c // 3), c // 3))[:2], axis=1)
    return np.sign(pf)[:, None] * ff[np.abs(pf)], fh[ph], fw[pw]


def s2v_rope_tables(grids: Sequence[Grid], length: int, freqs: np.ndarray,
                    head_dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """cos/sin float64 [1, length, 1, head_dim // 2] for the tokens of ``grids`` in order; rows past them
    (sequence-parallel padding) get angle 0. Shared by every sample of a batch (their layouts are equal).

    Each channel's angle depends on one axis only, so cos/sin are taken of the small per-axis tables and
    broadcast into place: no transcendental per token (at 63,360 tokens this is ~4x faster than per token).
    """
    c = head_dim // 2
    cos, sin = np.ones((length, c), np.float64), np.zeros((length, c), np.float64)
    row = 0
    for grid in grids:
        nf, nh, nw = (len(p) for p in grid)
        n = nf * nh * nw
        shape = (nf, nh, nw)
        views = cos[row:row + n].reshape(nf, nh, nw, c), sin[row:row + n].reshape(nf, nh, nw, c)
        lo = 0
        for axis, table in enumerate(_axis_tables(grid, freqs, head_dim)):
            width = table.shape[1]
            index = [None, None, None]
            index[axis] = slice(None)
            for view, fn in zip(views, (np.cos, np.sin)):
                view[..., lo:lo + width] = np.broadcast_to(fn(table)[tuple(index)], shape + (width,))
            lo += width
        row += n
    assert row <= length
    return cos[None, :, None, :], sin[None, :, None, :]


def _as_list(value, name: str) -> List[Tensor]:
    """A list of per-sample tensors, or a batched tensor split along its first axis."""
    if isinstance(value, Tensor):
        return [value[i] for i in range(value.shape[0])]
    if isinstance(value, (list, tuple)) and value:
        return list(value)
    raise ValueError(f"{name} must be a non-empty list of tensors (or one batched tensor), got {type(value)}")


def _timesteps(t) -> np.ndarray:
    """t as a Tensor, numpy array or list -> float64 numpy."""
    return (t.asnumpy() if isinstance(t, Tensor) else np.asarray(t)).astype(np.float64)


def _flat(p: Tensor) -> Tensor:
    """[B, dim, f, h, w] -> [B, f*h*w, dim]."""
    return p.reshape(p.shape[0], p.shape[1], -1).transpose(0, 2, 1)


class _TokenTypes(nn.Cell):
    """``trainable_cond_mask``: one learned vector per token type, ``weight`` [3, dim] (a torch Embedding)."""

    def __init__(self, num: int, dim: int, dtype=ms.float32):
        super().__init__()
        self.weight = Parameter(initializer(Normal(1.0), (num, dim), dtype), name="weight")

    def add(self, x: Tensor, runs: Sequence[Tuple[int, int, int]]) -> Tensor:
        """x [B, L, dim] + weight[type] for each run (start, stop, type) covering the sequence in order.

        The types form contiguous runs, so this adds a slice per run instead of gathering a [L, dim] table.
        """
        w = self.weight.astype(x.dtype)
        parts = [x[:, a:b] + w[k] for a, b, k in runs if b > a]
        return parts[0] if len(parts) == 1 else ops.cat(parts, 1)


class WanModel_S2V(WanModel):
    """Wan2.2 S2V DiT: video tokens conditioned on text, a reference image, motion latents, pose and audio.

    Constructor arguments are the official ones; the defaults are the released S2V-14B values (``from_pretrained``
    fills keys missing from a config.json with the official constructor defaults instead, as the official
    loader does). Supported: the released design (frame packing in "padd" mode, adaptive-norm audio injection,
    pose condition); the transformer motioner (``enable_motioner``) is not part of the release and is refused.
    ``zero_init`` only affects the official random init and is accepted and ignored (weights come from files).
    """

    MODEL_TYPES = ("s2v",)
    NETWORK = "s2v"
    CONFIG_KEYS = tuple(OFFICIAL_DEFAULTS)

    def __init__(self, cond_dim: int = 16, audio_dim: int = 1024, num_audio_token: int = 4,
                 enable_adain: bool = True, adain_mode: str = "attn_norm",
                 audio_inject_layers: Sequence[int] = (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39),
                 zero_init: bool = True, zero_timestep: bool = True, enable_motioner: bool = False,
                 add_last_motion: bool = True, enable_tsm: bool = False, trainable_token_pos_emb: bool = False,
                 motion_token_num: int = 1024, enable_framepack: bool = True, framepack_drop_mode: str = "padd",
                 model_type: str = "s2v", patch_size=(1, 2, 2), text_len: int = 512, in_dim: int = 16,
                 dim: int = 5120, ffn_dim: int = 13824, freq_dim: int = 256, text_dim: int = 4096,
                 out_dim: int = 16, num_heads: int = 40, num_layers: int = 40, window_size=(-1, -1),
                 qk_norm: bool = True, cross_attn_norm: bool = True, eps: float = 1e-6, dtype=ms.float32):
        _check_s2v_config(cond_dim=cond_dim, enable_adain=enable_adain, adain_mode=adain_mode,
                          enable_motioner=enable_motioner, enable_framepack=enable_framepack, in_dim=in_dim,
                          enable_tsm=enable_tsm, trainable_token_pos_emb=trainable_token_pos_emb)
        super().__init__(model_type=model_type, patch_size=patch_size, text_len=text_len, in_dim=in_dim, dim=dim,
                         ffn_dim=ffn_dim, freq_dim=freq_dim, text_dim=text_dim, out_dim=out_dim,
                         num_heads=num_heads, num_layers=num_layers, window_size=window_size, qk_norm=qk_norm,
                         cross_attn_norm=cross_attn_norm, eps=eps, dtype=dtype)
        self.cond_dim = cond_dim
        self.audio_dim = audio_dim
        self.num_audio_token = num_audio_token
        self.enable_adain = enable_adain
        self.adain_mode = adain_mode
        self.audio_inject_layers = [int(i) for i in audio_inject_layers]
        self.zero_init = zero_init
        self.zero_timestep = zero_timestep
        self.enable_motioner = enable_motioner
        self.add_last_motion = add_last_motion
        self.enable_tsm = enable_tsm
        self.trainable_token_pos_emb = trainable_token_pos_emb
        self.motion_token_num = motion_token_num
        self.enable_framepack = enable_framepack
        self.framepack_drop_mode = framepack_drop_mode

        self.cond_encoder = PatchEmbed3d(cond_dim, dim, self.patch_size, dtype=dtype)
        self.casual_audio_encoder = CausalAudioEncoder(dim=audio_dim, out_dim=dim, num_token=num_audio_token,
                                                       need_global=enable_adain, dtype=dtype)
        self.audio_injector = AudioInjector_WAN(num_layers, dim=dim, num_heads=num_heads,
                                                inject_layer=self.audio_inject_layers, adain_dim=dim, eps=eps,
                                                dtype=dtype)
        self.trainable_cond_mask = _TokenTypes(3, dim, dtype=dtype)
        self.frame_packer = FramePackMotioner(inner_dim=dim, num_heads=num_heads, zip_frame_buckets=(1, 2, 16),
                                              drop_mode=framepack_drop_mode, in_channels=in_dim, dtype=dtype)

    def set_compute_dtype(self, dtype) -> "WanModel_S2V":
        """As ``WanModel.set_compute_dtype``, plus the pose and motion patch embeddings. The audio encoder stays
        float32 (its convs always compute in float32; its linear is a fixed float32 island)."""
        super().set_compute_dtype(dtype)
        for _, cell in self.cells_and_names():
            if isinstance(cell, PatchEmbed3d):
                cell.compute_dtype = dtype
        return self

    # ---------------------------------------------------------------------------------------------- config
    @classmethod
    def config_from_file(cls, path: str) -> dict:
        """Constructor arguments from the official ``config.json``; missing keys take the official defaults,
        unknown keys are ignored with a warning (as the official diffusers loader does)."""
        with open(path, "r", encoding="utf-8") as f:
            raw = json.load(f)
        if raw.get("_class_name", "WanModel_S2V") != "WanModel_S2V":
            raise ValueError(f"{path} describes a {raw['_class_name']!r}, not a WanModel_S2V; point to the "
                             "Wan2.2-S2V-14B folder")
        unknown = sorted(k for k in raw if not k.startswith("_") and k not in cls.CONFIG_KEYS)
        if unknown:
            logger.warning("%s: ignoring config keys %s that WanModel_S2V does not take", path, unknown)
        config = dict(OFFICIAL_DEFAULTS)
        config.update({k: v for k, v in raw.items() if k in cls.CONFIG_KEYS})
        config["patch_size"] = tuple(config["patch_size"])
        config["window_size"] = tuple(config["window_size"])
        return config

    # --------------------------------------------------------------------------------------------- forward
    def construct(self, x, t: Tensor, context: Sequence[Tensor], seq_len: Optional[int], ref_latents,
                  motion_latents, cond_states, audio_input: Optional[Tensor] = None,
                  motion_frames: Sequence[int] = (17, 5), add_last_motion: int = 2,
                  drop_motion_frames: bool = False) -> List[Tensor]:
        """Predict the flow velocity of the noisy latents of one clip.

        Args:
            x: B noisy latents [16, F, H, W] (one batched tensor also accepted); all of one shape.
            t: timesteps [B].
            context: B text embeddings [L_i <= text_len, text_dim].
            seq_len: accepted for the official signature and unused (the layout fixes the length).
            ref_latents: B reference latents [16, 1, H_r, W_r].
            motion_latents: B motion latents [16, T_m, H, W] (the last 19 frames are packed; fewer are padded).
            cond_states: B pose latents [cond_dim, F, H, W] (zeros without a pose video).
            audio_input: wav2vec2 features [B, 25, audio_dim, T_a] for this clip's T_a video frames.
            motion_frames: (video motion frames M, latent motion frames M_lat): the first audio frame is repeated
                M times in front, and the first M_lat encoded audio frames (those of the motion) are dropped.
            add_last_motion: 2 keeps all motion latents, 1 zeroes the most recent one, 0 the three most recent
                (multiplied by the constructor's ``add_last_motion``).
            drop_motion_frames: no motion tokens at all (the first clip).
        Returns:
            B float32 tensors [out_dim, F, H, W].
        """
        x = _as_list(x, "x")
        ref_latents = _as_list(ref_latents, "ref_latents")
        motion_latents = _as_list(motion_latents, "motion_latents")
        cond_states = _as_list(cond_states, "cond_states")
        add_last_motion = int(self.add_last_motion) * int(add_last_motion)
        motion_frames = tuple(int(m) for m in motion_frames)
        self._check_inputs(x, t, context, ref_latents, motion_latents, cond_states, audio_input, motion_frames,
                           add_last_motion)
        plan = self.plan
        bsz = len(x)

        # Audio: the first frame repeated over the motion frames in front, encoded, the motion part dropped.
        audio = audio_input.astype(ms.float32)
        if motion_frames[0] > 0:
            audio = ops.cat([ops.tile(audio[..., :1], (1, 1, 1, motion_frames[0])), audio], -1)
        audio_global, audio_local = self.casual_audio_encoder(audio)
        audio_global = audio_global[:, motion_frames[1]:]  # [B, F, 1, dim]
        audio_local = audio_local[:, motion_frames[1]:]  # [B, F, num_audio_token + 1, dim]

        # Tokens [noisy + pose | reference | motion].
        noisy = self.patch_embedding(ops.stack(x)) + self.cond_encoder(ops.stack(cond_states))
        grid = tuple(int(s) for s in noisy.shape[2:])
        ref = self.patch_embedding(ops.stack(ref_latents))
        ref_grid = tuple(int(s) for s in ref.shape[2:])
        parts = [_flat(noisy), _flat(ref)]
        grids: List[Grid] = [
            (np.arange(grid[0]), np.arange(grid[1]), np.arange(grid[2])),
            (sampled_positions(REF_TIME_POSITION, 1, ref_grid[0]), np.arange(ref_grid[1]), np.arange(ref_grid[2])),
        ]
        if not drop_motion_frames:
            parts.append(ops.cat([self.frame_packer(m, add_last_motion) for m in motion_latents], 0))
            grids += self.frame_packer.grids(int(motion_latents[0].shape[2]), int(motion_latents[0].shape[3]))
        n_noisy, n_ref = grid[0] * grid[1] * grid[2], ref_grid[0] * ref_grid[1] * ref_grid[2]
        tokens = ops.cat(parts, 1).astype(ms.float32)
        length = tokens.shape[1]
        tokens = self.trainable_cond_mask.add(tokens, ((0, n_noisy, TOKEN_NOISY),
                                                       (n_noisy, n_noisy + n_ref, TOKEN_REF),
                                                       (n_noisy + n_ref, length, TOKEN_MOTION)))
        padded_len = _round_up(length, plan.pad_multiple())
        if padded_len > length:  # sequence-parallel padding: masked keys, identity rope, dropped at the end
            tokens = ops.cat([tokens, ops.zeros((bsz, padded_len - length, self.dim), tokens.dtype)], 1)

        # Time: the timestep for the noisy tokens, 0 for reference and motion tokens (zero_timestep).
        t_np = _timesteps(t).reshape(bsz, 1)
        start, stop = plan.shard_range(padded_len)
        if self.zero_timestep:
            e, e0 = self.embed_time(np.concatenate([t_np, np.zeros_like(t_np)], 1))  # rows: t, 0
            e = e[:, :1]
            bounds = ((0, n_noisy), (n_noisy, padded_len))
            segments = tuple((min(max(a - start, 0), stop - start), min(max(b - start, 0), stop - start))
                             for a, b in bounds)
        else:
            e, e0 = self.embed_time(t_np)
            segments = None
        ctx = self.embed_text(context)

        cos, sin = s2v_rope_tables(grids, padded_len, self.freqs, self.dim // self.num_heads)
        cos, sin = kernels.rotation_tables(cos[:, start:stop], sin[:, start:stop])
        step = _Step(e0=e0, seq_lens=np.full((bsz,), length, np.int64), rope_cos=cos, rope_sin=sin,
                     context=ctx, plan=plan, segments=segments)
        frame_tokens = grid[1] * grid[2]
        inject = self.audio_injector.injected_block_id
        h = plan.split(tokens)
        for i, block in enumerate(self.blocks):
            h = block(h, step)
            if i in inject:
                h = self.audio_injector.inject(inject[i], h, audio_local, audio_global, start, n_noisy,
                                               frame_tokens)
        h = plan.gather(self.head(h, e))
        return self.unpatchify(h[:, :n_noisy], [grid] * bsz)

    # ------------------------------------------------------------------------------------------ validation
    def _check_inputs(self, x, t, context, ref_latents, motion_latents, cond_states, audio_input, motion_frames,
                      add_last_motion):
        b = len(x)
        for name, seq in (("context", context), ("ref_latents", ref_latents), ("motion_latents", motion_latents),
                          ("cond_states", cond_states)):
            if len(seq) != b:
                raise ValueError(f"got {b} latents but {len(seq)} {name}; pass one per latent")
        shape = tuple(x[0].shape)
        if len(shape) != 4 or shape[0] != self.in_dim:
            raise ValueError(f"latent 0 has shape {shape}; expected [{self.in_dim}, F, H, W]")
        pt, ph, pw = self.patch_size
        if shape[1] % pt or shape[2] % ph or shape[3] % pw:
            raise ValueError(f"latent shape {shape}: F, H, W must be multiples of the patch size {self.patch_size}")
        for name, seq, want in (("x", x, shape), ("cond_states", cond_states, (self.cond_dim,) + shape[1:])):
            for i, u in enumerate(seq):
                if tuple(u.shape) != want:
                    raise ValueError(f"{name}[{i}] has shape {tuple(u.shape)}; expected {want} (every sample of "
                                     "a batch has the latent's shape; pose conditions have cond_dim channels)")
        for name, seq in (("ref_latents", ref_latents), ("motion_latents", motion_latents)):
            first = tuple(seq[0].shape)
            if len(first) != 4 or first[0] != self.in_dim or (name == "ref_latents" and first[1] != 1):
                raise ValueError(f"{name}[0] has shape {first}; expected [{self.in_dim}, "
                                 f"{'1' if name == 'ref_latents' else 'T_m'}, H, W]")
            if any(tuple(u.shape) != first for u in seq):
                raise ValueError(f"{name} differ in shape across the batch; every sample needs the same layout")
        for i, c in enumerate(context):
            if c.ndim != 2 or c.shape[1] != self.text_dim or c.shape[0] > self.text_len:
                raise ValueError(f"context {i} has shape {tuple(c.shape)}; expected [L <= {self.text_len}, "
                                 f"{self.text_dim}]")
        if _timesteps(t).shape != (b,):
            raise ValueError(f"t has shape {_timesteps(t).shape}; expected [{b}] (one timestep per latent)")
        if add_last_motion not in (0, 1, 2):
            raise ValueError(f"add_last_motion={add_last_motion}; expected 0, 1 or 2")
        if len(motion_frames) != 2 or min(motion_frames) < 0:
            raise ValueError(f"motion_frames={motion_frames}; expected [motion frames, latent motion frames], "
                             "e.g. [73, 19]")
        if audio_input is None:
            raise ValueError("audio_input is required: wav2vec2 features [B, 25, audio_dim, T_a]")
        want_layers = self.casual_audio_encoder.num_layers
        if (audio_input.ndim != 4 or audio_input.shape[0] != b or audio_input.shape[1] != want_layers
                or audio_input.shape[2] != self.audio_dim):
            raise ValueError(f"audio_input has shape {tuple(audio_input.shape)}; expected [{b}, {want_layers}, "
                             f"{self.audio_dim}, T_a]")
        frames = causal_audio_length(int(audio_input.shape[3]) + motion_frames[0]) - motion_frames[1]
        if frames != shape[1] // pt:
            raise ValueError(f"audio_input with {audio_input.shape[3]} frames and motion_frames={motion_frames} "
                             f"encodes to {frames} latent frames, but the latent has {shape[1]}; pass the clip's "
                             "audio (infer_frames of it) with motion_frames = [M, (M + 3) // 4]")


def _check_s2v_config(cond_dim, enable_adain, adain_mode, enable_motioner, enable_framepack, in_dim, enable_tsm,
                      trainable_token_pos_emb):
    if enable_motioner or not enable_framepack:
        raise ValueError(f"enable_motioner={enable_motioner}, enable_framepack={enable_framepack}: only frame "
                         "packing (enable_framepack=True, enable_motioner=False, the released S2V-14B design) "
                         "is implemented")
    if enable_tsm or trainable_token_pos_emb:
        raise ValueError("enable_tsm / trainable_token_pos_emb belong to the transformer motioner, which is not "
                         "implemented; set them False as the release does")
    if not enable_adain or adain_mode != "attn_norm":
        raise ValueError(f"enable_adain={enable_adain}, adain_mode={adain_mode!r}: only the released audio "
                         "injection (enable_adain=True, adain_mode='attn_norm') is implemented")
    if cond_dim <= 0:
        raise ValueError(f"cond_dim={cond_dim}: the official forward always encodes a pose condition; use the "
                         "released cond_dim=16")
    if in_dim != 16:
        raise ValueError(f"in_dim={in_dim}: the official frame packer takes 16-channel latents (Wan2.1 VAE)")
