"""Shared test set-up: offline, quiet, and a private planner cache per session."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("REELCHAIN_CACHE", tempfile.mkdtemp(prefix="reelchain-cache-"))

import pytest  # noqa: E402


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
