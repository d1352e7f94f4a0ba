"""S2V networks: the wav2vec2 audio front end (and, next to it, the S2V DiT)."""
from .audio_encoder import AudioEncoder
from .wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC

from .model_s2v import WanModel_S2V  # noqa: E402

__all__ = [
    "WanModel_S2V",
    "AudioEncoder",
    "Wav2Vec2Config",
    "Wav2Vec2ForCTC",
]
