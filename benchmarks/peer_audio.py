"""Peers of `bench_audio`: log-mel of every WAV in a folder with librosa and with
torchaudio (same parameters: 8 kHz, n_fft 256, hop 64, 64 Slaney mel bands, zero-padded
centred frames, power to dB with top_db 80). Files are read with soundfile in both.

    python benchmarks/peer_audio.py DIR [--threads 2] [--repeat 3]
"""
import argparse
import time
from pathlib import Path

import librosa
import soundfile
import torch
import torchaudio


def best_time(repeat, run):
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(Path(args.dir).glob("*.wav"))

    def with_librosa():
        for f in files:
            y, sr = soundfile.read(f, dtype="float32")
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=256, hop_length=64, n_mels=64, pad_mode="constant")
            librosa.power_to_db(mel)

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=8000, n_fft=256, hop_length=64, n_mels=64, norm="slaney", mel_scale="slaney", pad_mode="constant"
    )
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80)

    def with_torchaudio():
        with torch.inference_mode():
            for f in files:
                y, _ = soundfile.read(f, dtype="float32")
                to_db(mel(torch.from_numpy(y)))

    for name, run, threads in [("librosa", with_librosa, 1), ("torchaudio", with_torchaudio, torch.get_num_threads())]:
        seconds = best_time(args.repeat, run)
        print(f"{name} {librosa.__version__ if name == 'librosa' else torchaudio.__version__}: "
              f"{len(files)} clips, {threads} thread(s): {len(files) / seconds:.0f} clips/s")


if __name__ == "__main__":
    main()
