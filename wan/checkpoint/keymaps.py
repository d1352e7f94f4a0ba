"""Name and dtype maps between official Wan2.2 checkpoints and our MindSpore Cells, as data.

Our parameter names equal the official PyTorch state-dict keys wherever MindSpore allows, so the tables
are near-empty: a network's KeyMap lists only the renames, the official keys that are not parameters, and
the parameters that stay float32 whatever dtype the rest of the network uses. Direct loading
(`load_into_cell`), the converter (`python -m convert`) and LoRA merging all go through these tables.

To add a rename: append (official_regex, our_template) to `renames` (re.fullmatch, first match wins, the
template may use \\1 groups). Official keys matching a `skip` regex are ignored on load and not converted.
"""
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyMap:
    """How one network's official checkpoint keys map onto our parameter names and dtypes.

    network: registry name ("dit", "t5", "vae2_1", "vae2_2", "s2v", "wav2vec2").
    release_dtype: dtype the official release stores (informative; the converter's default).
    renames: ((official_regex, our_template), ...), re.fullmatch, first match wins; unmatched keys map to
        themselves.
    skip: official-key regexes that hold no parameter of ours (buffers, training leftovers).
    keep_fp32: our-name regexes of parameters kept in float32 whatever the chosen dtype (official code
        computes with them in float32).
    """
    network: str
    release_dtype: str
    renames: tuple = ()
    skip: tuple = ()
    keep_fp32: tuple = ()

    def to_ours(self, official_key):
        """Our parameter name for an official key, or None if the key is skipped."""
        if any(re.fullmatch(p, official_key) for p in self.skip):
            return None
        for pattern, template in self.renames:
            match = re.fullmatch(pattern, official_key)
            if match:
                return match.expand(template)
        return official_key

    def param_dtype(self, our_name, dtype):
        """dtype our parameter `our_name` is stored/loaded in when the network runs in `dtype`."""
        if any(re.fullmatch(p, our_name) for p in self.keep_fp32):
            return "float32"
        return dtype

    def map_keys(self, official_keys, source="checkpoint"):
        """{our_name: official_key} for the non-skipped keys; two keys landing on one name is an error."""
        mapped = {}
        for key in official_keys:
            ours = self.to_ours(key)
            if ours is None:
                continue
            if ours in mapped:
                raise ValueError(f"{source}: keys {mapped[ours]!r} and {key!r} both map to parameter {ours!r} "
                                 f"in the {self.network} key map; fix wan/checkpoint/keymaps.py")
            mapped[ours] = key
        return mapped


KEYMAPS = {
    # DiT (wan/modules/model.py): identity names. The modulation vectors are float32 parameters in our
    # WanModel whatever its dtype (the official modulation math runs in float32).
    "dit": KeyMap("dit", "bfloat16", keep_fp32=(r"(.*\.)?modulation",)),
    # S2V DiT: same naming convention as the DiT; its extra modules (audio injector, ...) keep official names.
    "s2v": KeyMap("s2v", "bfloat16", keep_fp32=(r"(.*\.)?modulation",)),
    # umt5-xxl encoder (models_t5_umt5-xxl-enc-bf16.pth): identity.
    "t5": KeyMap("t5", "bfloat16"),
    # Wan2.1 VAE (Wan2.1_VAE.pth) and Wan2.2 VAE (Wan2.2_VAE.pth): identity, float32 in the release.
    "vae2_1": KeyMap("vae2_1", "float32"),
    "vae2_2": KeyMap("vae2_2", "float32"),
    # wav2vec2 (Wav2Vec2ForCTC in Hugging Face layout, the S2V release's wav2vec2-large-xlsr-53-english): HF
    # names, float32. The positional conv's weight norm is stored as weight_g/weight_v (older transformers,
    # the release) or as parametrizations.weight.original0/1 (torch's parametrization API, newer saves): both
    # land on our weight_g/weight_v. The masked-time embedding is used only in training.
    "wav2vec2": KeyMap("wav2vec2", "float32",
                       renames=((r"(.*)\.parametrizations\.weight\.original0", r"\1.weight_g"),
                                (r"(.*)\.parametrizations\.weight\.original1", r"\1.weight_v")),
                       skip=(r"wav2vec2\.masked_spec_embed",)),
}


def get_keymap(network):
    """The KeyMap of `network`; ValueError naming the known networks otherwise."""
    if network not in KEYMAPS:
        raise ValueError(f"unknown network {network!r}; known: {', '.join(sorted(KEYMAPS))}")
    return KEYMAPS[network]


# LoRA files in the wild name DiT modules three ways: the official names (Wan2.2-Lightning, optionally prefixed
# "diffusion_model."), kohya/musubi's flattened "lora_unet_blocks_0_self_attn_q", and diffusers' names below
# (optionally prefixed "transformer."). This table maps a diffusers module name to the official one.
DIFFUSERS_DIT_MODULES = (
    (r"blocks\.(\d+)\.attn1\.to_q", r"blocks.\1.self_attn.q"),
    (r"blocks\.(\d+)\.attn1\.to_k", r"blocks.\1.self_attn.k"),
    (r"blocks\.(\d+)\.attn1\.to_v", r"blocks.\1.self_attn.v"),
    (r"blocks\.(\d+)\.attn1\.to_out\.0", r"blocks.\1.self_attn.o"),
    (r"blocks\.(\d+)\.attn2\.to_q", r"blocks.\1.cross_attn.q"),
    (r"blocks\.(\d+)\.attn2\.to_k", r"blocks.\1.cross_attn.k"),
    (r"blocks\.(\d+)\.attn2\.to_v", r"blocks.\1.cross_attn.v"),
    (r"blocks\.(\d+)\.attn2\.to_out\.0", r"blocks.\1.cross_attn.o"),
    (r"blocks\.(\d+)\.attn2\.add_k_proj", r"blocks.\1.cross_attn.k_img"),
    (r"blocks\.(\d+)\.attn2\.add_v_proj", r"blocks.\1.cross_attn.v_img"),
    (r"blocks\.(\d+)\.ffn\.net\.0\.proj", r"blocks.\1.ffn.0"),
    (r"blocks\.(\d+)\.ffn\.net\.2", r"blocks.\1.ffn.2"),
    (r"condition_embedder\.time_proj", r"time_projection.1"),
    (r"condition_embedder\.time_embedder\.linear_1", r"time_embedding.0"),
    (r"condition_embedder\.time_embedder\.linear_2", r"time_embedding.2"),
    (r"condition_embedder\.text_embedder\.linear_1", r"text_embedding.0"),
    (r"condition_embedder\.text_embedder\.linear_2", r"text_embedding.2"),
    (r"condition_embedder\.image_embedder\.ff\.net\.0\.proj", r"img_emb.proj.1"),
    (r"condition_embedder\.image_embedder\.ff\.net\.2", r"img_emb.proj.3"),
    (r"proj_out", r"head.head"),
)
