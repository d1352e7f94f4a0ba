"""Merge LoRA files into DiT weights: W <- W + scale * (alpha / rank) * up @ down, exactly in float32.

Accepted key forms (the ones Wan LoRAs ship with):
  - official / Wan2.2-Lightning: `[diffusion_model.]blocks.0.self_attn.q.lora_down.weight`, `.lora_up.weight`,
    `.alpha` (rank = lora_down rows);
  - PEFT / diffusers: `.lora_A.weight` / `.lora_B.weight` with official module names or diffusers module names
    (`[transformer.]blocks.0.attn1.to_q`, see keymaps.DIFFUSERS_DIT_MODULES), no alpha (= rank, factor 1);
  - kohya / musubi: `lora_unet_blocks_0_self_attn_q.lora_down.weight` (dots flattened to underscores);
  - full deltas some distillation LoRAs carry: `<module>.diff` (added to the weight) and `.diff_b` (to the bias).
Every key must land on a parameter of the target; anything else is an error naming the keys.
"""
import os
import re

import numpy as np

from .dtypes import bf16_bits_to_float32, cast_array
from .errors import CheckpointError
from .keymaps import DIFFUSERS_DIT_MODULES
from .readers import open_checkpoint
from .sharding import zero3_slice

_SUFFIXES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff", "diff"),
)
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "lora_unet_")
LIGHTNING_EXPERT_FILES = ("high_noise_model.safetensors", "low_noise_model.safetensors")


def lightning_lora_file(lora_dir, expert):
    """Path of the LoRA for `expert` ("high_noise_model" / "low_noise_model") in a Wan2.2-Lightning folder."""
    path = os.path.join(lora_dir, f"{expert}.safetensors")
    if not os.path.isfile(path):
        found = sorted(os.listdir(lora_dir)) if os.path.isdir(lora_dir) else "no such folder"
        raise FileNotFoundError(f"--lora_dir {lora_dir!r} has no {expert}.safetensors (found: {found}); a Lightning "
                                f"LoRA folder holds {' and '.join(LIGHTNING_EXPERT_FILES)}")
    return path


def _split_key(key):
    for suffix, kind in _SUFFIXES:
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            for prefix in _PREFIXES:
                if module.startswith(prefix):
                    module = module[len(prefix):]
                    break
            return module, kind
    return None, None


def _resolve_module(module, param_names, flat_names):
    """Official module name (param name without '.weight') for a LoRA module name, or None."""
    if module + ".weight" in param_names:
        return module
    for pattern, template in DIFFUSERS_DIT_MODULES:
        match = re.fullmatch(pattern, module)
        if match and match.expand(template) + ".weight" in param_names:
            return match.expand(template)
    return flat_names.get(module)


def parse_lora(reader, param_names):
    """Group a LoRA file's keys by the parameter they modify.

    Returns {official module name: {"down"|"up"|"alpha"|"diff"|"diff_b": file key}}. Raises CheckpointError
    naming every key that does not belong to a parameter of the target.
    """
    param_names = set(param_names)
    flat_names = {}
    for name in param_names:
        if name.endswith(".weight"):
            flat_names[name[: -len(".weight")].replace(".", "_")] = name[: -len(".weight")]
    groups, unknown = {}, []
    for key in reader.keys():
        module, kind = _split_key(key)
        target = _resolve_module(module, param_names, flat_names) if module is not None else None
        if target is None:
            unknown.append(key)
            continue
        if kind in groups.setdefault(target, {}):
            raise CheckpointError(f"{reader.path}: keys {groups[target][kind]!r} and {key!r} both give the "
                                  f"{kind} of {target!r}")
        groups[target][kind] = key
    if unknown:
        raise CheckpointError(
            f"{reader.path}: {len(unknown)} LoRA key(s) match no parameter of this model: "
            f"{', '.join(unknown[:20])}{' ...' if len(unknown) > 20 else ''}. Is this a LoRA for another model?")
    for target, parts in groups.items():
        if ("down" in parts) != ("up" in parts):
            have = parts.get("down") or parts.get("up")
            raise CheckpointError(f"{reader.path}: {have!r} has no matching "
                                  f"{'lora_up/lora_B' if 'down' in parts else 'lora_down/lora_A'} key")
        if "alpha" in parts and "down" not in parts:
            raise CheckpointError(f"{reader.path}: {parts['alpha']!r} has no lora_down/lora_up pair")
        if "diff_b" in parts and target + ".bias" not in param_names:
            raise CheckpointError(f"{reader.path}: {parts['diff_b']!r} targets {target}.bias, which this model lacks")
    return groups


class _CellTarget:
    """Parameters of a MindSpore Cell as float32 numpy, written back in each parameter's own dtype."""

    def __init__(self, cell):
        self.params = dict(cell.parameters_and_names())

    def names(self):
        return self.params.keys()

    def shape(self, name):
        return tuple(self.params[name].shape)

    def get(self, name):
        from .loading import ms_dtype_name

        value = self.params[name].asnumpy()
        if ms_dtype_name(self.params[name].dtype) == "bfloat16":
            return bf16_bits_to_float32(value.view(np.uint16))
        return value.astype(np.float32)

    def set(self, name, value):
        from .loading import ms_dtype_name, to_ms_tensor

        dtype = ms_dtype_name(self.params[name].dtype)
        self.params[name].set_data(to_ms_tensor(cast_array(value, "float32", dtype), dtype))


class _DictTarget:
    """{name: numpy array} updated in place (each array keeps its dtype)."""

    def __init__(self, state):
        self.state = state

    def names(self):
        return self.state.keys()

    def shape(self, name):
        return tuple(self.state[name].shape)

    def get(self, name):
        return np.asarray(self.state[name], dtype=np.float32)

    def set(self, name, value):
        self.state[name] = value.astype(self.state[name].dtype)


def merge_lora(target, lora_path, scale=1.0, shard=None):
    """Merge a LoRA into DiT weights in place.

    Args:
        target: a DiT nn.Cell (parameters named like the official keys) or a {name: np.ndarray} state dict.
        lora_path: LoRA .safetensors (or .pth) file, any key form listed in the module docstring.
        scale: LoRA strength; delta = scale * (alpha / rank) * up @ down, with alpha = rank when absent.
        shard: (rank, world_size) if the target's parameters hold only this rank's zero3_slice rows.
    Returns:
        sorted names of the parameters changed.
    The arithmetic: W32 + float32(scale * alpha / rank) * (up32 @ down32), then rounded to W's dtype.
    """
    tgt = _CellTarget(target) if not isinstance(target, dict) else _DictTarget(target)
    changed = []
    with open_checkpoint(lora_path) as reader:
        groups = parse_lora(reader, tgt.names())
        for module, parts in sorted(groups.items()):
            weight = module + ".weight"
            if "down" in parts:
                _merge_pair(reader, tgt, weight, parts, scale, shard)
                changed.append(weight)
            if "diff" in parts:
                _add_delta(reader, tgt, weight, reader.read(parts["diff"]).astype(np.float32) * np.float32(scale),
                           parts["diff"], shard)
                if weight not in changed:
                    changed.append(weight)
            if "diff_b" in parts:
                bias = module + ".bias"
                _add_delta(reader, tgt, bias, reader.read(parts["diff_b"]).astype(np.float32) * np.float32(scale),
                           parts["diff_b"], shard)
                changed.append(bias)
    return sorted(changed)


def _pair_delta(reader, parts, scale, full_shape, weight):
    """float32 scale * (alpha / rank) * up @ down, reshaped to the parameter's full shape."""
    down = reader.read(parts["down"]).astype(np.float32)
    up = reader.read(parts["up"]).astype(np.float32)
    rank = down.shape[0] if down.ndim else 0
    shape = (up.shape[0],) + tuple(full_shape)[1:] if up.ndim else ()
    ok = (down.ndim >= 2 and up.ndim >= 2 and up.shape[1] == rank and all(d == 1 for d in up.shape[2:])
          and int(np.prod(down.shape[1:])) == int(np.prod(shape[1:])) and tuple(shape) == tuple(full_shape))
    if not ok:
        raise CheckpointError(
            f"{reader.path}: LoRA {parts['down']!r} {tuple(down.shape)} / {parts['up']!r} {tuple(up.shape)} does not "
            f"fit parameter {weight!r} of shape {tuple(full_shape)}; is this a LoRA for another model?")
    alpha = float(rank)
    if "alpha" in parts:
        alpha_arr = reader.read(parts["alpha"])
        if alpha_arr.size != 1:
            raise CheckpointError(f"{reader.path}: {parts['alpha']!r} should be a scalar, has shape {alpha_arr.shape}")
        alpha = float(alpha_arr.reshape(-1)[0])
    factor = np.float32(scale * alpha / rank)
    return (factor * (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1))).reshape(shape)


def _merge_pair(reader, tgt, weight, parts, scale, shard):
    have = tgt.shape(weight)
    # with shard, the target holds rows: the full shape is (up rows, the rest of the shard's shape)
    up_rows = reader.shape(parts["up"])[0] if len(reader.shape(parts["up"])) else 0
    full = (up_rows,) + tuple(have)[1:] if shard is not None else tuple(have)
    _add_delta(reader, tgt, weight, _pair_delta(reader, parts, scale, full, weight), parts["down"], shard)


def _add_delta(reader, tgt, name, delta, key, shard):
    have = tgt.shape(name)
    if shard is not None and tuple(delta.shape) != have:
        rows = zero3_slice(delta.shape, *shard)
        if rows is not None:
            delta = delta[rows]
    if tuple(delta.shape) != have:
        raise CheckpointError(f"{reader.path}: {key!r} gives a delta of shape {tuple(delta.shape)} for {name!r} of "
                              f"shape {have}; is this a LoRA for another model?")
    tgt.set(name, tgt.get(name) + delta)


class LoraDeltas:
    """A LoRA as per-parameter float32 deltas, merged while the checkpoint loads.

    ``load_into_cell(cell, path, deltas=LoraDeltas(lora_path, scale))`` adds each delta to the checkpoint's
    value in float32 and rounds the sum once to the parameter's dtype: the rule "merge into float32 weights,
    then cast once". (Merging after a bf16 load would round the base weight twice: once when loading, once
    after the merge.) Works with ZeRO3 row shards: each rank receives the delta rows of its shard only.
    """

    def __init__(self, lora_path, scale=1.0):
        self.path = lora_path
        self.scale = float(scale)
        self.reader = None
        self.targets = {}  # parameter name -> [(kind, parts)]
        self.shapes = {}
        self.applied = []

    def bind(self, param_shapes):
        """Check the LoRA against the cell's {name: full shape} (every key must fit); -> self (the callable)."""
        self.reader = open_checkpoint(self.path)
        self.shapes = dict(param_shapes)
        for module, parts in parse_lora(self.reader, self.shapes).items():
            if "down" in parts:
                self.targets.setdefault(module + ".weight", []).append(("pair", parts))
            if "diff" in parts:
                self.targets.setdefault(module + ".weight", []).append(("diff", parts))
            if "diff_b" in parts:
                self.targets.setdefault(module + ".bias", []).append(("diff_b", parts))
        for name in self.targets:  # shape errors before any weight is read
            for kind, parts in self.targets[name]:
                if kind == "pair":
                    down, up = self.reader.shape(parts["down"]), self.reader.shape(parts["up"])
                    if len(up) < 2 or up[0] != self.shapes[name][0] or len(down) < 2 or down[0] != up[1] or \
                            int(np.prod(down[1:])) != int(np.prod(self.shapes[name][1:])):
                        raise CheckpointError(
                            f"{self.path}: LoRA {parts['down']!r} {tuple(down)} / {parts['up']!r} {tuple(up)} does "
                            f"not fit parameter {name!r} of shape {self.shapes[name]}; is this a LoRA for another "
                            f"model?")
                elif tuple(self.reader.shape(parts[kind])) != tuple(self.shapes[name]):
                    raise CheckpointError(f"{self.path}: {parts[kind]!r} has shape {self.reader.shape(parts[kind])}"
                                          f" but {name!r} has shape {self.shapes[name]}")
        return self

    def __call__(self, name, rows=None):
        """float32 delta for parameter ``name`` (only ``rows`` of it when given), or None."""
        if name not in self.targets:
            return None
        total = None
        for kind, parts in self.targets[name]:
            if kind == "pair":
                d = _pair_delta(self.reader, parts, self.scale, self.shapes[name], name)
            else:
                d = self.reader.read(parts[kind]).astype(np.float32) * np.float32(self.scale)
            total = d if total is None else total + d
        self.applied.append(name)
        return total if rows is None else total[rows]

    def names(self):
        return sorted(self.targets)

    def close(self):
        if self.reader is not None:
            self.reader.close()
            self.reader = None
