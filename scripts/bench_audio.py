"""Time the S2V audio front end (AudioEncoder.extract_audio_feat + get_audio_embed_bucket_fps) for 10 s and 60 s clips.

    python scripts/bench_audio.py                 # host parts with the tiny test network; a few seconds
    python scripts/bench_audio.py --real-size     # also the real 24 x 1024 wav2vec2 (random weights) on CPU

Rows per clip length, for a 44.1 kHz stereo MP3 (decode + channel mix + resampling) and a 16 kHz mono WAV:
decode (soundfile), resample to 16 kHz (soxr HQ), the processor normalisation, the wav2vec2 forward (tiny network
by default: the real large-xlsr is 24 layers x 1024 wide, 315 M parameters, device work on Ascend), the 50 -> 30 fps
interpolation (host index table + gather), and the bucketing of all hidden states into 81-frame clips at 16 fps;
then the interpolation and bucketing again at the real width (25 hidden states x 1024), on random features.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TINY = os.path.join(ROOT, "tests", "fixtures", "s2v_audio", "wav2vec2_tiny")
REAL = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
            conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=128,
            num_conv_pos_embedding_groups=16, vocab_size=33)


def speech_like(seconds, rate, channels, seed=0):
    """Syllable-rate amplitude modulated harmonics plus noise: float32 [N, C]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    y = 0.2 * voice * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2) + 0.01 * rng.standard_normal(t.shape)
    return np.stack([y * (1.0 - 0.2 * c) for c in range(channels)], 1).astype(np.float32)


def timed(rows, name, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    rows.append((name, time.perf_counter() - start))
    return out


def run(encoder, path, label, rows, sync):
    from mindspore import Tensor, ops

    from wan.modules.s2v.audio_encoder import AUDIO_FPS, linear_interpolation
    from wan.utils import audio as audio_io

    y, rate = timed(rows, f"{label}: decode", audio_io.decode_audio, path)
    y = timed(rows, f"{label}: channel mix", audio_io.to_mono, y)
    y = timed(rows, f"{label}: resample {rate} -> 16000 Hz", audio_io.resample, y, rate, 16000)
    x = timed(rows, f"{label}: normalise", encoder.input_values, y)
    def forward():
        out = encoder.model(Tensor(x))
        out[-1].asnumpy()  # wait for the device
        return out

    states = timed(rows, f"{label}: wav2vec2 forward ({sync})", forward)
    feat = ops.cat(states, 0)
    n50 = feat.shape[1]
    feat = timed(rows, f"{label}: 50 -> 30 fps interpolation", lambda: linear_interpolation(feat, AUDIO_FPS, 30))
    feat.asnumpy()
    rows.append((f"{label}: -> {n50} frames at 50 fps, {feat.shape[1]} at 30 fps", None))
    buckets, clips = timed(rows, f"{label}: bucket {feat.shape[0]} layers to 81-frame clips",
                           lambda: encoder.get_audio_embed_bucket_fps(feat, fps=16, batch_frames=81, m=0))
    buckets.asnumpy()
    rows.append((f"{label}: -> buckets {tuple(buckets.shape)}, {clips} clip(s)", None))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real-size", action="store_true", help="also time the real-size network (random weights)")
    args = parser.parse_args()
    import soundfile as sf

    from wan.modules.s2v import AudioEncoder
    from wan.runtime import configure

    configure()
    encoder = AudioEncoder(model_id=TINY)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in (10, 60):
            mp3 = os.path.join(tmp, f"speech_{seconds}s.mp3")
            wav = os.path.join(tmp, f"speech_{seconds}s.wav")
            sf.write(mp3, speech_like(seconds, 44100, 2), 44100, format="MP3", subtype="MPEG_LAYER_III")
            sf.write(wav, speech_like(seconds, 16000, 1)[:, 0], 16000, subtype="PCM_16")
            run(encoder, mp3, f"{seconds:2d} s 44.1k stereo mp3", rows, "tiny")
            run(encoder, wav, f"{seconds:2d} s 16k mono wav", rows, "tiny")
            start = time.perf_counter()
            encoder.extract_audio_feat(mp3, return_all_layers=True).asnumpy()
            rows.append((f"{seconds:2d} s mp3: whole extract_audio_feat (tiny)", time.perf_counter() - start))
        # The post-network steps at the real width: 25 hidden states x 1024 channels.
        from mindspore import Tensor

        from wan.modules.s2v.audio_encoder import AUDIO_FPS, linear_interpolation

        for seconds in (10, 60):
            states = Tensor(np.random.default_rng(1).standard_normal((25, seconds * 50 - 1, 1024)).astype(np.float32))
            feat = timed(rows, f"{seconds:2d} s real width: interpolation {tuple(states.shape)} -> 30 fps",
                         lambda: linear_interpolation(states, AUDIO_FPS, 30).asnumpy())
            buckets = timed(rows, f"{seconds:2d} s real width: bucketing {feat.shape} to 81-frame clips",
                            lambda: encoder.get_audio_embed_bucket_fps(Tensor(feat), 16, 81, 0)[0].asnumpy())
            rows.append((f"{seconds:2d} s real width: -> buckets {buckets.shape} float32, "
                         f"{buckets.nbytes / 2 ** 20:.0f} MiB", None))
        if args.real_size:
            import mindspore as ms
            from mindspore import nn

            from wan.modules.s2v.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC

            with nn.no_init_parameters():
                model = Wav2Vec2ForCTC(Wav2Vec2Config(**REAL))
            rng = np.random.default_rng(0)
            for _, p in model.parameters_and_names():
                p.set_data(Tensor((rng.standard_normal(p.shape) * 0.02).astype(np.float32)))
            model.set_train(False)
            for seconds in (10,):
                x = encoder.input_values(speech_like(seconds, 16000, 1)[:, 0])
                start = time.perf_counter()
                states = model(Tensor(x, ms.float32))
                states[-1].asnumpy()
                rows.append((f"{seconds:2d} s: real-size wav2vec2 forward on CPU (24 x 1024)",
                             time.perf_counter() - start))
    width = max(len(name) for name, _ in rows)
    for name, seconds in rows:
        print(f"{name:<{width}}  " + ("" if seconds is None else f"{seconds * 1000:9.1f} ms"))


if __name__ == "__main__":
    main()
