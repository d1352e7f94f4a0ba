"""python -m convert: turn an official Wan2.2 folder into MindSpore-named safetensors in a chosen dtype.

    python -m convert --src ./Wan2.2-TI2V-5B --dst ./Wan2.2-TI2V-5B-ms --dtype bf16
    python -m convert --verify ./Wan2.2-TI2V-5B-ms

Why safetensors and not MindSpore's protobuf .ckpt: `mindspore.load_checkpoint(path, format="safetensors")`
reads it natively (so `load_checkpoint` + `load_param_into_net(strict_load=True)` accept the output), it can
be written one tensor at a time (a 14B expert never sits in host memory whole), its header gives random access
so ZeRO3 ranks read only their rows, and the bytes are a pure function of the input (sorted keys, no
timestamps): converting twice gives identical files.

Every file is written to a temp name and renamed when complete; `convert_manifest.json` (sha256 of every output
file) is written last, after re-reading and checking every output, so a folder with a manifest is complete and
a killed conversion leaves only temp files, which the next run removes.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

from wan.utils.fileio import atomic_output

from wan.checkpoint.dtypes import canonical_dtype
from wan.checkpoint.errors import CheckpointError
from wan.checkpoint.keymaps import get_keymap
from wan.checkpoint.layout import LAYOUTS, MANIFEST, TOKENIZER_DIR, detect_layout
from wan.checkpoint.loading import read_param
from wan.checkpoint.readers import open_checkpoint
from wan.checkpoint.safetensors_io import SafetensorsReader, write_safetensors

MANIFEST_FORMAT = "wan2.2-mindspore-checkpoint"
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".index.json")
_EXTRA_FILE_LIMIT = 1 << 20


def _sha256_file(path, chunk=16 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_copy(src, dst):
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)


def _atomic_write_text(path, text):
    with atomic_output(path, durable=True) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


class _Progress:
    """Tensor-count progress on stderr (tqdm when available)."""

    def __init__(self, total, enabled):
        self.bar = None
        self.enabled = enabled
        self.total, self.done = total, 0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="tensor", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def step(self, label):
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(label, refresh=False)
            self.bar.update(1)
        elif self.enabled and (self.done % 50 == 0 or self.done == self.total):
            print(f"[convert] {self.done}/{self.total} tensors ({label})", file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _plan_component(src, comp, dtype):
    """-> (reader, [(our name, official key, out dtype, shape)]) for one network."""
    path = os.path.join(src, comp.source) if comp.source else src
    reader = open_checkpoint(path)
    keymap = get_keymap(comp.network)
    mapped = keymap.map_keys(reader.keys(), reader.path)
    entries = []
    for name, key in sorted(mapped.items()):
        src_dtype = reader.dtype(key)
        out = keymap.param_dtype(name, dtype) if src_dtype in ("bfloat16", "float16", "float32", "float64") \
            else src_dtype
        entries.append((name, key, out, tuple(reader.shape(key))))
    return reader, entries


def convert_checkpoint(src, dst, dtype="bf16", vae_dtype="fp32", overwrite=False, progress=True):
    """Convert the official folder `src` into `dst`; returns the manifest dict.

    dtype applies to the DiT(s) and the T5 encoder; vae_dtype to the VAE (the official code runs it in float32).
    Parameters a KeyMap keeps in float32 (DiT modulation) stay float32.
    """
    dtype, vae_dtype = canonical_dtype(dtype), canonical_dtype(vae_dtype)
    layout = detect_layout(src)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"--dst must differ from --src ({src!r})")
    if os.path.exists(dst) and os.listdir(dst) and not overwrite:
        raise ValueError(f"--dst {dst!r} exists and is not empty; pass --overwrite to replace its contents")
    os.makedirs(dst, exist_ok=True)
    stale_manifest = os.path.join(dst, MANIFEST)
    if os.path.exists(stale_manifest):
        os.remove(stale_manifest)  # the folder is incomplete until the new manifest is written
    _remove_temp_files(dst)

    plans = []
    for comp in LAYOUTS[layout]:
        reader, entries = _plan_component(src, comp, vae_dtype if comp.network.startswith("vae") else dtype)
        plans.append((comp, reader, entries))
    bar = _Progress(sum(len(e) for _, _, e in plans), progress)
    written, networks = {}, {}
    try:
        for comp, reader, entries in plans:
            out_path = os.path.join(dst, comp.dest)
            os.makedirs(os.path.dirname(out_path), exist_ok=True)

            def fetch_for(key, out_dtype, label, reader=reader):
                def fetch():
                    array = read_param(reader, key, out_dtype)
                    bar.step(label)
                    return array
                return fetch

            items = [(name, out, shape, fetch_for(key, out, comp.dest)) for name, key, out, shape in entries]
            sha = write_safetensors(out_path, items, metadata={"format": "ms", "wan_network": comp.network})
            written[comp.dest] = sha
            networks[comp.dest] = {"network": comp.network, "source": comp.source or ".",
                                   "tensors": {name: [out, list(shape)] for name, _, out, shape in entries}}
            for rel in comp.copies:
                os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
                _atomic_copy(os.path.join(src, rel), os.path.join(dst, rel))
                written[rel] = None
            reader.close()
    finally:
        bar.close()
        for _, reader, _ in plans:
            reader.close()
    tok_src = os.path.join(src, TOKENIZER_DIR)
    for root, _, files in os.walk(tok_src):
        for fname in sorted(files):
            rel = os.path.relpath(os.path.join(root, fname), src)
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            _atomic_copy(os.path.join(src, rel), os.path.join(dst, rel))
            written[rel] = None

    # Small top-level extras (README, LICENSE, ModelScope's configuration.json, the tiny-checkpoint marker).
    for fname in sorted(os.listdir(src)):
        path = os.path.join(src, fname)
        if os.path.isfile(path) and not fname.endswith(_WEIGHT_SUFFIXES) and fname not in written \
                and os.path.getsize(path) <= _EXTRA_FILE_LIMIT:
            _atomic_copy(path, os.path.join(dst, fname))
            written[fname] = None

    manifest = {"format": MANIFEST_FORMAT, "version": 1, "layout": layout, "dtype": dtype, "vae_dtype": vae_dtype,
                "networks": networks, "files": {}}
    for rel in sorted(written):
        manifest["files"][rel] = {"bytes": os.path.getsize(os.path.join(dst, rel)),
                                  "sha256": _sha256_file(os.path.join(dst, rel))}
        if written[rel] is not None and manifest["files"][rel]["sha256"] != written[rel]:
            raise CheckpointError(f"{os.path.join(dst, rel)}: bytes on disk differ from the bytes written; the disk "
                                  "or filesystem corrupted the output. Run the conversion again")
    _check_outputs(dst, manifest)
    _atomic_write_text(os.path.join(dst, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _check_outputs(dst, manifest):
    """Re-open every converted weight file: key set, dtypes and shapes must equal the plan."""
    for rel, info in manifest["networks"].items():
        with SafetensorsReader(os.path.join(dst, rel)) as reader:
            got = {k: [reader.dtype(k), list(reader.shape(k))] for k in reader.keys()}
        if got != info["tensors"]:
            bad = sorted(set(got) ^ set(info["tensors"])) or \
                sorted(k for k in got if got[k] != info["tensors"][k])
            raise CheckpointError(f"{os.path.join(dst, rel)}: converted file does not hold the planned tensors "
                                  f"(first differences: {bad[:5]})")


def _remove_temp_files(dst):
    for root, _, files in os.walk(dst):
        for fname in files:
            if ".tmp." in fname:
                os.remove(os.path.join(root, fname))


def verify_converted(dst):
    """Check a converted folder against its manifest (every file's size and sha256, the tensors of every
    weight file). Returns the manifest; raises CheckpointError naming the first bad file."""
    path = os.path.join(dst, MANIFEST)
    if not os.path.isfile(path):
        raise CheckpointError(f"{dst}: no {MANIFEST}; the conversion did not finish (run python -m convert again)")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: not a manifest written by python -m convert")
    for rel, info in manifest["files"].items():
        full = os.path.join(dst, rel)
        if not os.path.isfile(full):
            raise CheckpointError(f"{full}: listed in the manifest but missing")
        if os.path.getsize(full) != info["bytes"] or _sha256_file(full) != info["sha256"]:
            raise CheckpointError(f"{full}: size or sha256 differs from the manifest; the file is corrupted, "
                                  "convert again")
    _check_outputs(dst, manifest)
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", help="official checkpoint folder as downloaded (Hugging Face / ModelScope)")
    parser.add_argument("--dst", help="output folder for the MindSpore checkpoint")
    parser.add_argument("--dtype", default="bf16", help="dtype of the DiT(s) and T5: bf16 (default), fp16, fp32")
    parser.add_argument("--vae_dtype", default="fp32", help="dtype of the VAE (default fp32, as the official code)")
    parser.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --dst")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--verify", metavar="DIR", help="only verify a converted folder against its manifest")
    args = parser.parse_args(argv)
    try:
        if args.verify:
            manifest = verify_converted(args.verify)
            print(f"ok: {args.verify} matches its manifest ({len(manifest['files'])} files)")
            return 0
        if not args.src or not args.dst:
            parser.error("--src and --dst are required (or use --verify DIR)")
        manifest = convert_checkpoint(args.src, args.dst, args.dtype, args.vae_dtype, args.overwrite,
                                      progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"converted {args.src} ({manifest['layout']}) -> {args.dst}: {len(manifest['files'])} files, "
          f"{total / 2**30:.2f} GiB, verified")
    return 0
