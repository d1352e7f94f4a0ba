"""wav2vec 2.0 (the Hugging Face ``Wav2Vec2ForCTC`` architecture) as MindSpore Cells, for the S2V audio features.

The S2V release ships ``wav2vec2-large-xlsr-53-english/`` (a Hugging Face folder: ``config.json``,
``preprocessor_config.json``, ``model.safetensors`` and/or ``pytorch_model.bin``, tokenizer files). Parameter names
equal the Hugging Face state-dict keys, so the folder loads with the one key map ``KEYMAPS["wav2vec2"]`` (it only
folds the two spellings of the positional conv's weight norm onto ``weight_g``/``weight_v``).

Pipeline of the network, for raw audio x [B, N] at 16 kHz:
    feature encoder   7 strided 1-D convs (x320 downsampling: 50 frames/s), each conv -> norm -> GELU, where the
                      norm is a LayerNorm over channels on every layer ("layer", large-xlsr) or a GroupNorm
                      with one group per channel on the first layer only ("group", wav2vec2-base)
    feature projection LayerNorm(conv_dim[-1]) -> Linear -> hidden [B, T, D]
    encoder           h + GELU(grouped conv with weight norm)(h), then the transformer layers: pre-norm
                      ("stable layer norm", large-xlsr) with a final LayerNorm, or post-norm with the LayerNorm
                      before the first layer (base)
All math goes through ``wan.modules.kernels``; dropout, layer drop and SpecAugment are training-only and absent.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from typing import List, Optional, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, Uniform, initializer

from .. import kernels

__all__ = ["Wav2Vec2Config", "Wav2Vec2ForCTC", "Wav2Vec2Model", "weights_file"]

# Which weights file of a Hugging Face folder is read, in Hugging Face's own order of preference.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class Wav2Vec2Config:
    """The fields of a Hugging Face ``Wav2Vec2Config`` that inference uses (defaults: the HF defaults).

    The released large-xlsr-53 values: hidden_size 1024, 24 layers, 16 heads, intermediate 4096, conv_dim 7 x 512,
    conv_kernel (10, 3, 3, 3, 3, 2, 2), conv_stride (5, 2, 2, 2, 2, 2, 2), conv_bias True,
    feat_extract_norm "layer", do_stable_layer_norm True, 128 positional conv taps in 16 groups, vocab 33.
    """
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: Tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: Tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: Tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    vocab_size: int = 32
    add_adapter: bool = False

    def __post_init__(self):
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
            raise ValueError(f"wav2vec2 config: conv_dim {self.conv_dim}, conv_stride {self.conv_stride} and "
                             f"conv_kernel {self.conv_kernel} must have the same length")
        if self.feat_extract_norm not in ("layer", "group"):
            raise ValueError(f"wav2vec2 config: feat_extract_norm {self.feat_extract_norm!r} is not supported; "
                             "expected 'layer' or 'group'")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) != "gelu":
                raise ValueError(f"wav2vec2 config: {name} {getattr(self, name)!r} is not supported; only 'gelu' "
                                 "(the value of every released wav2vec2 checkpoint)")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"wav2vec2 config: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(f"wav2vec2 config: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")
        if self.add_adapter:
            raise ValueError("wav2vec2 config: add_adapter=True (an adapter after the encoder) is not supported")

    @classmethod
    def from_dict(cls, config: dict) -> "Wav2Vec2Config":
        """From a parsed ``config.json``; keys that inference does not use (dropouts, CTC loss, ...) are ignored."""
        if config.get("model_type", "wav2vec2") != "wav2vec2":
            raise ValueError(f"config.json has model_type {config.get('model_type')!r}; expected 'wav2vec2'")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    @classmethod
    def from_folder(cls, folder: str) -> "Wav2Vec2Config":
        path = os.path.join(folder, "config.json")
        if not os.path.isfile(path):
            raise ValueError(f"wav2vec2 folder {folder!r} has no config.json; pass the Hugging Face folder "
                             "(in the S2V release: Wan2.2-S2V-14B/wav2vec2-large-xlsr-53-english)")
        with open(path, encoding="utf-8") as f:
            try:
                return cls.from_dict(json.load(f))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); re-download the wav2vec2 folder") from None

    def num_frames(self, num_samples: int) -> int:
        """Frames the feature encoder makes from ``num_samples`` samples (0 if too short)."""
        n = int(num_samples)
        for k, s in zip(self.conv_kernel, self.conv_stride):
            if n < k:
                return 0
            n = (n - k) // s + 1
        return n

    @property
    def receptive_field(self) -> int:
        """Fewest input samples that give one frame (400 = 25 ms at 16 kHz for the released strides)."""
        n = 1
        for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            n = (n - 1) * s + k
        return n


def weights_file(folder: str) -> str:
    """The weights file of a Hugging Face wav2vec2 folder (safetensors preferred, as Hugging Face does)."""
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise ValueError(f"wav2vec2 folder {folder!r} has none of {', '.join(WEIGHT_FILES)}; re-download the folder "
                     "(the S2V release ships wav2vec2-large-xlsr-53-english/model.safetensors)")


def _uniform(shape, fan_in, dtype):
    return initializer(Uniform(1.0 / math.sqrt(max(fan_in, 1))), shape, dtype)


class Conv1d(nn.Cell):
    """``torch.nn.Conv1d`` parameters (weight [Cout, Cin // groups, k], optional bias [Cout]) over ``kernels.conv1d``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1,
                 bias: bool = True, dtype=ms.float32):
        super().__init__()
        self.stride, self.padding, self.groups = int(stride), int(padding), int(groups)
        fan_in = cin // groups * kernel
        self.weight = Parameter(_uniform((cout, cin // groups, kernel), fan_in, dtype), name="weight")
        self.bias = Parameter(_uniform((cout,), fan_in, dtype), name="bias") if bias else None

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, Cin, T] -> [B, Cout, T']."""
        return kernels.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


class GroupNorm(nn.Cell):
    """``torch.nn.GroupNorm`` with affine: weight/bias [C]."""

    def __init__(self, num_groups: int, channels: int, eps: float = 1e-5, dtype=ms.float32):
        super().__init__()
        self.num_groups, self.eps = int(num_groups), float(eps)
        self.weight = Parameter(initializer("ones", (channels,), dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (channels,), dtype), name="bias")

    def construct(self, x: Tensor) -> Tensor:
        return kernels.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class FeatureConvLayer(nn.Cell):
    """conv -> norm ("layer": LayerNorm over channels; "group": GroupNorm, one group per channel) -> GELU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool, norm: Optional[str],
                 dtype=ms.float32):
        super().__init__()
        self.conv = Conv1d(cin, cout, kernel, stride, bias=bias, dtype=dtype)
        self.norm = norm
        if norm == "layer":
            # torch.nn.LayerNorm's default eps: the config's layer_norm_eps is not used here.
            self.layer_norm = kernels.LayerNorm(cout, eps=1e-5, elementwise_affine=True, dtype=dtype)
        elif norm == "group":
            self.layer_norm = GroupNorm(cout, cout, eps=1e-5, dtype=dtype)
        else:
            self.layer_norm = None

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, Cin, T] -> [B, Cout, T']."""
        x = self.conv(x)
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(0, 2, 1)).transpose(0, 2, 1)
        elif self.norm == "group":
            x = self.layer_norm(x)
        return kernels.gelu(x)


class FeatureEncoder(nn.Cell):
    """Raw audio [B, N] -> conv features [B, conv_dim[-1], T] (T = ``config.num_frames(N)``)."""

    def __init__(self, config: Wav2Vec2Config, dtype=ms.float32):
        super().__init__()
        layers = []
        cin = 1
        for i, (cout, k, s) in enumerate(zip(config.conv_dim, config.conv_kernel, config.conv_stride)):
            norm = "layer" if config.feat_extract_norm == "layer" else ("group" if i == 0 else None)
            layers.append(FeatureConvLayer(cin, cout, k, s, config.conv_bias, norm, dtype=dtype))
            cin = cout
        self.conv_layers = nn.CellList(layers)

    def construct(self, x: Tensor) -> Tensor:
        h = x[:, None, :]
        for layer in self.conv_layers:
            h = layer(h)
        return h


class FeatureProjection(nn.Cell):
    def __init__(self, config: Wav2Vec2Config, dtype=ms.float32):
        super().__init__()
        c = config.conv_dim[-1]
        self.layer_norm = kernels.LayerNorm(c, eps=config.layer_norm_eps, elementwise_affine=True, dtype=dtype)
        self.projection = kernels.Linear(c, config.hidden_size, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, T, C] conv features -> [B, T, D]."""
        return self.projection(self.layer_norm(x))


class WeightNormConv1d(nn.Cell):
    """A grouped Conv1d whose kernel is weight-normalised over its first two axes (torch ``weight_norm(dim=2)``).

    weight = weight_g * weight_v / ||weight_v||, the norm taken per kernel tap over (out, in) channels:
    weight_g [1, 1, k], weight_v [C, C // groups, k], bias [C].
    """

    def __init__(self, channels: int, kernel: int, groups: int, dtype=ms.float32):
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        fan_in = channels // groups * kernel
        self.weight_g = Parameter(initializer("ones", (1, 1, kernel), dtype), name="weight_g")
        self.weight_v = Parameter(initializer(Normal(1.0 / math.sqrt(fan_in)), (channels, channels // groups, kernel),
                                              dtype), name="weight_v")
        self.bias = Parameter(initializer("zeros", (channels,), dtype), name="bias")

    def weight(self) -> Tensor:
        v = self.weight_v.astype(ms.float32)
        norm = ops.sqrt(ops.sum(v * v, (0, 1), keepdim=True))
        return (v * (self.weight_g.astype(ms.float32) / norm)).astype(self.weight_v.dtype)

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, C, T] -> [B, C, T + 2 * (k // 2) - k + 1]."""
        return kernels.conv1d(x, self.weight(), self.bias, 1, self.padding, self.groups)


class PositionalConvEmbedding(nn.Cell):
    def __init__(self, config: Wav2Vec2Config, dtype=ms.float32):
        super().__init__()
        k = config.num_conv_pos_embeddings
        self.conv = WeightNormConv1d(config.hidden_size, k, config.num_conv_pos_embedding_groups, dtype=dtype)
        # With an even kernel, padding k // 2 on both sides makes one frame too many: the last one is dropped.
        self.num_pad_remove = 1 if k % 2 == 0 else 0

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, T, D] -> positional term [B, T, D]."""
        h = self.conv(x.transpose(0, 2, 1))
        if self.num_pad_remove:
            h = h[:, :, :h.shape[2] - self.num_pad_remove]
        return kernels.gelu(h).transpose(0, 2, 1)


class SelfAttention(nn.Cell):
    def __init__(self, dim: int, num_heads: int, dtype=ms.float32):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_proj = kernels.Linear(dim, dim, dtype=dtype)
        self.k_proj = kernels.Linear(dim, dim, dtype=dtype)
        self.v_proj = kernels.Linear(dim, dim, dtype=dtype)
        self.out_proj = kernels.Linear(dim, dim, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, T, D] -> [B, T, D]; every frame attends to every frame (no mask: one unpadded clip)."""
        b, t, d = x.shape
        shape = (b, t, self.num_heads, self.head_dim)
        q = self.q_proj(x).reshape(shape)
        k = self.k_proj(x).reshape(shape)
        v = self.v_proj(x).reshape(shape)
        return self.out_proj(kernels.attention(q, k, v).reshape(b, t, d))


class FeedForward(nn.Cell):
    def __init__(self, dim: int, hidden: int, dtype=ms.float32):
        super().__init__()
        self.intermediate_dense = kernels.Linear(dim, hidden, dtype=dtype)
        self.output_dense = kernels.Linear(hidden, dim, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        return self.output_dense(kernels.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Cell):
    """One transformer layer: pre-norm (``stable``, large-xlsr) or post-norm (base)."""

    def __init__(self, config: Wav2Vec2Config, dtype=ms.float32):
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.stable = config.do_stable_layer_norm
        self.attention = SelfAttention(d, config.num_attention_heads, dtype=dtype)
        self.layer_norm = kernels.LayerNorm(d, eps=eps, elementwise_affine=True, dtype=dtype)
        self.feed_forward = FeedForward(d, config.intermediate_size, dtype=dtype)
        self.final_layer_norm = kernels.LayerNorm(d, eps=eps, elementwise_affine=True, dtype=dtype)

    def construct(self, h: Tensor) -> Tensor:
        """h: [B, T, D] -> [B, T, D]."""
        if self.stable:
            h = h + self.attention(self.layer_norm(h))
            return h + self.feed_forward(self.final_layer_norm(h))
        h = self.layer_norm(h + self.attention(h))
        return self.final_layer_norm(h + self.feed_forward(h))


class Encoder(nn.Cell):
    def __init__(self, config: Wav2Vec2Config, dtype=ms.float32):
        super().__init__()
        self.stable = config.do_stable_layer_norm
        self.pos_conv_embed = PositionalConvEmbedding(config, dtype=dtype)
        self.layer_norm = kernels.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, elementwise_affine=True,
                                            dtype=dtype)
        self.layers = nn.CellList([EncoderLayer(config, dtype=dtype) for _ in range(config.num_hidden_layers)])

    def construct(self, h: Tensor) -> List[Tensor]:
        """h: [B, T, D] projected features -> hidden states, num_hidden_layers + 1 tensors [B, T, D].

        As Hugging Face's ``output_hidden_states``: entry i is the input of layer i, the last entry the encoder's
        output (after the final LayerNorm in the stable layout). In the stable layout entry 0 is un-normalised.
        """
        h = h + self.pos_conv_embed(h)
        if not self.stable:
            h = self.layer_norm(h)
        states = []
        for layer in self.layers:
            states.append(h)
            h = layer(h)
        states.append(self.layer_norm(h) if self.stable else h)
        return states


class Wav2Vec2Model(nn.Cell):
    def __init__(self, config: Wav2Vec2Config, dtype=ms.float32):
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureEncoder(config, dtype=dtype)
        self.feature_projection = FeatureProjection(config, dtype=dtype)
        self.encoder = Encoder(config, dtype=dtype)

    def construct(self, input_values: Tensor) -> List[Tensor]:
        """input_values: [B, N] normalised 16 kHz audio -> hidden states (see ``Encoder.construct``), [B, T, D]."""
        feats = self.feature_extractor(input_values.astype(self.feature_projection.projection.weight.dtype))
        return self.encoder(self.feature_projection(feats.transpose(0, 2, 1)))


class Wav2Vec2ForCTC(nn.Cell):
    """``transformers.Wav2Vec2ForCTC`` for inference: the wav2vec2 body plus the CTC head ``lm_head``.

    ``construct`` returns the hidden states (what S2V uses); ``ctc_logits`` applies the head to the last one.
    """

    def __init__(self, config: Wav2Vec2Config, dtype=ms.float32):
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config, dtype=dtype)
        self.lm_head = kernels.Linear(config.hidden_size, config.vocab_size, dtype=dtype)

    def construct(self, input_values: Tensor) -> List[Tensor]:
        """input_values: [B, N] -> num_hidden_layers + 1 hidden states [B, T, D], T = config.num_frames(N)."""
        n = input_values.shape[-1]
        if self.config.num_frames(n) < 1:
            raise ValueError(f"{n} audio samples are fewer than the {self.config.receptive_field} that wav2vec2 "
                             "needs for one feature frame; pass a longer clip")
        return self.wav2vec2(input_values)

    def ctc_logits(self, last_hidden_state: Tensor) -> Tensor:
        """[B, T, D] -> [B, T, vocab_size]."""
        return self.lm_head(last_hidden_state)

    @classmethod
    def from_pretrained(cls, folder: str, dtype=ms.float32, strict: bool = True) -> "Wav2Vec2ForCTC":
        """Build from a Hugging Face folder's ``config.json`` and load its weights file without torch.

        The weights file is ``model.safetensors`` (or its sharded index), else ``pytorch_model.bin`` read by the
        safe ``.pth`` reader (no pickle code runs). Keys are checked strictly: a missing, unexpected or mis-shaped
        tensor is an error naming it.
        """
        from wan.checkpoint import load_into_cell  # lazy: the checkpoint layer is only needed for loading

        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise ValueError(f"wav2vec2 folder {folder!r} does not exist; pass the Hugging Face folder (in the S2V "
                             "release: Wan2.2-S2V-14B/wav2vec2-large-xlsr-53-english)")
        config = Wav2Vec2Config.from_folder(folder)
        path = weights_file(folder)
        with nn.no_init_parameters():
            model = cls(config, dtype=dtype)
        load_into_cell(model, path, network="wav2vec2", strict=strict)
        model.set_train(False)
        return model

