"""Candidate updates: full fine-tuning or LoRA (peft) of an SD pipeline on captioned images.

The data is a folder with ``metadata.jsonl`` (``file_name``, ``text``), as in the diffusers
training examples. Full fine-tunes are saved as diffusers folders; LoRAs as the
``pytorch_lora_weights.safetensors`` that ``pipe.load_lora_weights`` reads, with the adapter
metadata (without it, a LoRA whose alpha differs from its rank reloads at the wrong scale).
Intermediate checkpoints (``save_steps``) are written as ``checkpoint-<step>/`` next to the
final result, for resurgence curves along the fine-tuning.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gate import provenance, sd
from gate.errors import BadInput

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass
class FinetuneConfig:
    mode: str = field(default="lora", metadata={"help": "full or lora"})
    steps: int = 400
    lr: float = field(default=0.0, metadata={"help": "0 = 1e-4 for full, 1e-3 for LoRA"})
    batch_size: int = 16
    rank: int = 4
    alpha: float = 4.0
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    train_text_encoder: bool = False
    save_steps: tuple[int, ...] = ()
    seed: int = 0
    max_grad_norm: float = 1.0
    resolution: int | None = field(default=None, metadata={"help": "pixels (default: the model's own size)"})

    def __post_init__(self) -> None:
        if self.mode not in ("full", "lora"):
            raise BadInput(f"--mode {self.mode!r}: use full or lora")
        if self.steps < 1 or self.batch_size < 1:
            raise BadInput("--steps and --batch-size must be positive")
        if self.lr == 0.0:
            self.lr = 1e-4 if self.mode == "full" else 1e-3
        bad = [s for s in self.save_steps if not 0 < s <= self.steps]
        if bad:
            raise BadInput(f"--save-steps {bad}: each must lie in 1..{self.steps}")


def _save(pipe, out: Path, cfg: FinetuneConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "full":
        pipe.save_pretrained(out, safe_serialization=True)
        return
    from peft.utils import get_peft_model_state_dict

    kwargs: dict[str, Any] = {
        "unet_lora_layers": get_peft_model_state_dict(pipe.unet),
        "unet_lora_adapter_metadata": pipe.unet.peft_config["default"].to_dict(),
    }
    if cfg.train_text_encoder:
        te_cfg = pipe.text_encoder._gate_lora_config
        kwargs["text_encoder_lora_layers"] = get_peft_model_state_dict(pipe.text_encoder, adapter_name="default")
        kwargs["text_encoder_lora_adapter_metadata"] = te_cfg.to_dict()
    type(pipe).save_lora_weights(out, safe_serialization=True, weight_name=LORA_WEIGHTS, **kwargs)


def finetune(
    checkpoint: Path,
    data_dir: Path,
    out: Path,
    cfg: FinetuneConfig,
    *,
    progress: Callable[[str, int], Callable[[int, dict[str, float]], None]] | None = None,
    base_pipe=None,
    compute=None,
) -> dict[str, Any]:
    """Fine-tunes ``checkpoint`` on ``data_dir`` and saves the update in ``out`` (with
    ``finetune.json``). ``compute`` (``gate.devices.Compute``): device; precision (fp32 master
    weights, CUDA autocast in bf16 or fp16 with a gradient scaler); gradient checkpointing."""
    from peft import LoraConfig

    from gate.devices import Compute
    from gate.pipeline import load_pipeline
    from gate.provenance import library_versions
    from gate.unlearn.base import load_image_folder

    compute = compute or Compute()
    t0 = time.perf_counter()
    pipe = base_pipe if base_pipe is not None else load_pipeline(checkpoint, device=compute.device)
    sd.set_resolution(pipe, cfg.resolution)
    data = load_image_folder(pipe, data_dir)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    unet, te = pipe.unet, pipe.text_encoder
    unet.requires_grad_(False)
    te.requires_grad_(False)
    if cfg.mode == "lora":
        unet.add_adapter(
            LoraConfig(
                r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.lora_targets), init_lora_weights="gaussian"
            )
        )
        if cfg.train_text_encoder:
            # peft's own injection: transformers 5's ``add_adapter`` demands a newer peft than
            # the one that resolves with diffusers here, and would refuse to run
            from peft import inject_adapter_in_model

            te_cfg = LoraConfig(
                r=cfg.rank, lora_alpha=cfg.alpha, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]
            )
            inject_adapter_in_model(te_cfg, te, adapter_name="default")
            te._gate_lora_config = te_cfg
        params = [p for m in (unet, te) for n, p in m.named_parameters() if "lora_" in n]
    else:
        params = list(unet.parameters()) + (list(te.parameters()) if cfg.train_text_encoder else [])
    for p in params:
        p.requires_grad_(True)
    compute.prepare(unet, *([te] if cfg.train_text_encoder else []))
    scaler = compute.scaler()
    unet.train()
    if cfg.train_text_encoder:
        te.train()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2 if cfg.mode == "full" else 0.0)
    tick = (progress or (lambda name, total: lambda s, logs: None))(f"fine-tune ({cfg.mode})", cfg.steps)
    out = Path(out)
    saved: list[str] = []
    losses: list[float] = []
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, len(data), (min(cfg.batch_size, len(data)),), generator=gen)
        x0, prompts = data.batch(idx)
        with compute.autocast():
            cond = te(sd.prompt_ids(pipe, prompts))[0]  # with gradient when the text encoder trains
            loss = sd.ddpm_loss(pipe, unet, x0, cond, gen)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        tick(step - 1, {"loss": losses[-1]})
        if step in cfg.save_steps and step != cfg.steps:
            _save(pipe, out / f"checkpoint-{step}", cfg)
            saved.append(f"checkpoint-{step}")
    unet.eval()
    te.eval()
    if compute.gradient_checkpointing and hasattr(unet, "disable_gradient_checkpointing"):
        unet.disable_gradient_checkpointing()
    for p in params:
        if not torch.isfinite(p).all():
            raise BadInput("fine-tuning diverged (non-finite weights); lower --lr")
    _save(pipe, out, cfg)
    record = {
        "kind": "candidate-update",
        "mode": cfg.mode,
        "config": dataclasses.asdict(cfg),
        "compute": compute.as_record(),
        "inputs": {
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": provenance.hash_tree(Path(checkpoint), skip=("erase.json", "finetune.json")),
            "data": str(data_dir),
            "data_sha256": provenance.hash_tree(Path(data_dir)),
            "n_images": len(data),
        },
        "checkpoints": saved,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "libraries": library_versions(),
        "outputs": {"sha256": provenance.hash_tree(out, skip=("finetune.json",))},
    }
    provenance.write_json_atomic(out / "finetune.json", record)
    return record


def parse_steps(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        raise BadInput(f"--save-steps {text!r}: give comma-separated step numbers, e.g. 100,200,400") from None


def lora_targets(text: str | None) -> Sequence[str]:
    return tuple(t.strip() for t in text.split(",")) if text else FinetuneConfig.lora_targets
