"""Peak RSS of finishing a video 4× longer than a short one, each in a fresh process.

    python benchmarks/finishing_rss.py [--seconds 10] [--size 640x360] [--fps 24]

Finishing streams frames, so its memory should not grow with the video's length (target:
long / short ≤ 1.10). Both runs use every part of finishing: title and end cards on a video
frame, a caption under every 2 s shot, music faded in and out and ducked under a voice
that speaks half the time. Prints each run's peak RSS and wall time, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.video_io import VideoWriter  # noqa: E402

FINISH = """
import sys
from pathlib import Path
from pipelines.finishing import Caption, Finishing, Title, finish
video, out, music, voice, seconds = sys.argv[1:6]
shots = [(t, t + 2.0) for t in range(0, int(seconds), 2)]
spec = Finishing(
    title=Title("A paper boat", 2.0, "first_frame"), end=Title("The end", 2.0, "last_frame"),
    captions=[Caption(f"Shot {k}: the boat drifts on", shot=k) for k in range(len(shots))],
    music=Path(music), voice=Path(voice),
)
finish(video, out, spec, shots=shots)
"""


def write_inputs(folder: Path, seconds: int, width: int, height: int, fps: int) -> list[Path]:
    """A moving test picture, music as long as the video, a voice speaking every other second."""
    video = folder / f"video-{seconds}.mp4"
    x = np.arange(width)[None, :, None]
    y = np.arange(height)[:, None, None]
    with VideoWriter(video, fps, width, height) as w:
        for i in range(seconds * fps):
            frame = 128 + 100 * np.sin((x + 3 * i) / 17.0) * np.cos((y - 2 * i) / 23.0)
            w.write(np.broadcast_to(frame, (height, width, 3)).astype(np.uint8))
    rate = 44_100
    t = np.arange(seconds * rate) / rate
    music = 0.3 * np.sin(2 * np.pi * 440 * t)
    voice = 0.3 * np.sin(2 * np.pi * 1800 * t) * (np.floor(t) % 2 == 1)
    paths = [video]
    for name, samples in (("music", music), ("voice", voice)):
        path = folder / f"{name}-{seconds}.wav"
        with wave.open(str(path), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(rate)
            f.writeframes((samples * 32767).astype("<i2").tobytes())
        paths.append(path)
    return paths


def peak_rss(args: list[str]) -> tuple[int, float]:
    """Peak resident set (bytes) of a fresh Python running FINISH, and its wall time."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.call(sys.argv[1:])\n"
        "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-c", FINISH, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    kib = int(next(ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK_KIB")).split()[1])
    return kib * 1024, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="the short video's length")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=24)
    opts = parser.parse_args()
    width, height = map(int, opts.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for seconds in (opts.seconds, 4 * opts.seconds):
            video, music, voice = write_inputs(Path(tmp), seconds, width, height, opts.fps)
            out = Path(tmp) / f"finished-{seconds}.mp4"
            peak, wall = results[seconds] = peak_rss([str(video), str(out), str(music),
                                                      str(voice), str(seconds)])  # fmt: skip
            print(f"{seconds:4d} s at {width}x{height}, {opts.fps} fps: peak RSS "
                  f"{peak / 2**20:.1f} MiB, {wall:.1f} s")  # fmt: skip
        short, long = results[opts.seconds][0], results[4 * opts.seconds][0]
        print(f"peak RSS, 4× longer / short: {long / short:.3f}× (target ≤ 1.10)")


if __name__ == "__main__":
    main()
