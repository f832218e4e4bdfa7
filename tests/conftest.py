"""Shared test set-up (offline, quiet, a private planner cache per session) and the helpers
several test modules use: the in-process CLI, one torch thread, a live app server, LoRA
files, a test tone, a small tmpfs."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("REELCHAIN_CACHE", tempfile.mkdtemp(prefix="reelchain-cache-"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gradio_client import Client  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Two one-second shots at 32 px: the smallest storyboard with a join.
TWO_SHOTS = """
fps: 8
width: 32
height: 32
seed: 3
shots:
  - prompt: a paper boat on a rainy street
    seconds: 1
  - prompt: a lighthouse at dusk
    seconds: 1
"""


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process (models stay cached between tests); returns (code, out, err)."""
    from pipelines.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def make_lora(twin: str, out_dir, seed: int = 1):
    """A LoRA file for a tiny twin's denoiser, made with peft (random, so it changes the
    picture): what a creator's trained LoRA is to a real model."""
    from pathlib import Path

    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    from pipelines.twins import build_twin

    pipe = build_twin(twin)
    name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    module = getattr(pipe, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                            target_modules=["to_q", "to_k", "to_v", "to_out.0"])  # fmt: skip
        module.add_adapter(config)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
    out_dir = Path(out_dir)
    type(pipe).save_lora_weights(out_dir, **{f"{name}_lora_layers": layers})
    return out_dir / "pytorch_lora_weights.safetensors"


def twin_names(kind: str) -> list[str]:
    """The `tiny-<twin>` model names of every twin of one kind ("image" or "video")."""
    from pipelines.models import FAMILIES, twin_presets

    return [n for n, p in twin_presets().items() if FAMILIES[p.family].kind == kind]


def assert_same_alone_or_batched(generate, items: list, atol: float = 2e-3) -> None:
    """The check every family passes (as diffusers' pipeline test mixins have one): items made
    in one batch are the items made one at a time, and different items differ.
    `generate(items, batch_size)` returns one float array per item."""
    together = generate(items, len(items))
    alone = [generate([item], 1)[0] for item in items]
    for i, (a, b) in enumerate(zip(together, alone, strict=True)):
        assert np.abs(a - b).max() < atol, f"item {i}: batched differs from alone"
    assert np.abs(together[0] - together[1]).max() > 1e-3  # different inputs, different outputs


@pytest.fixture
def one_thread():
    """One torch thread (restored afterwards): the twins' tensors are too small to gain from
    more, and two spinning OpenMP threads beside other processes slow tests many times."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tone(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A 440 Hz sine as a 16-bit mono WAV file."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def mount_tmpfs(path: Path, options: str) -> Path:
    """Mount a tmpfs with `options` (say "size=60k" or "ro,size=64k") at `path`, or skip the
    test where that cannot be done (not root, no mount); the caller unmounts it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python app.py --model tiny` on a free port, its output in a log file."""

    def __init__(
        self,
        runs: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: tuple[str, ...] = (),
    ):
        self.runs, self.port, self.args = runs, port or free_port(), list(args)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {k: v for k, v in os.environ.items() if k not in ("REELCHAIN_AUTH", "SPACE_ID")}
        self.env.update({"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})})
        self.log = runs.parent / f"server-{self.port}.log"
        self.proc = None

    def start(self, timeout: float = 90) -> "Server":
        cmd = [sys.executable, "app.py", "--model", "tiny", "--port", str(self.port),
               "--runs", str(self.runs), *self.args]  # fmt: skip
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"server did not start in {timeout} s:\n{self.log.read_text()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> Client:
        return Client(self.url, verbose=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """`python app.py --model tiny` for one test module, started with the module's
    `SERVER_ENV` (the REELCHAIN_MAX_* caps it tests)."""
    runs = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "runs"
    s = Server(runs, getattr(request.module, "SERVER_ENV", {})).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()
