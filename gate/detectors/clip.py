"""open_clip zero-shot detection: is the concept the best of a fixed label set?

Settings (policy ``detector:``):

    type: open_clip
    model: ViT-L-14                 # an open_clip model name
    pretrained: openai              # a tag, resolved from the local cache only, or a weights file path
    config_dir: path                # optional: folder of custom model configs (JSON)
    labels:                         # label -> texts (their mean feature stands for the label)
      skull: [a skull, a skull and crossbones]
      circle: [a circle]
    decision: argmax                # or a probability threshold, e.g. 0.5

A concept is present when its label wins (``argmax``) or its softmax probability reaches the
threshold. The score is that probability (1.0 = present). Paths are relative to the policy file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gate.detectors.zeroshot import ZeroShotCLIP
from gate.errors import BadInput


def load_open_clip(model: str, pretrained: str, *, config_dir: Path | None = None, device: str = "cpu"):
    """(model, preprocess, tokenizer), offline: a tag must already be in the local cache."""
    import open_clip

    if config_dir is not None:
        if not config_dir.is_dir():
            raise BadInput(f"detector config_dir {config_dir}: no such folder")
        open_clip.add_model_config(config_dir)
    if model not in open_clip.list_models():
        raise BadInput(f"detector model {model!r} is not an open_clip model (nor in config_dir)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time
    is_path = Path(pretrained).suffix in (".safetensors", ".bin", ".pt", ".pth")
    if is_path and not Path(pretrained).is_file():
        raise BadInput(f"detector weights {pretrained}: no such file")
    if is_path and Path(pretrained).suffix != ".safetensors":
        raise BadInput(f"detector weights {pretrained}: use .safetensors (pickled weights are not loaded)")
    try:
        m, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
    except Exception as e:  # missing from the cache, or a tag the model does not have
        raise BadInput(
            f"detector {model}/{pretrained}: cannot load it offline ({type(e).__name__}: {str(e)[:200]}); "
            "put the weights in the local cache or give a .safetensors path"
        ) from None
    return m, preprocess, open_clip.get_tokenizer(model)


class OpenCLIPDetector:
    """The policy-facing detector: settings in, presence decisions out."""

    kind = "open_clip"
    settings_allowed: frozenset[str] = frozenset({"model", "pretrained", "config_dir", "labels", "decision"})

    def __init__(self, settings: Mapping[str, Any], *, base_dir: Path = Path("."), device: str = "cpu") -> None:
        unknown = set(settings) - self.settings_allowed
        if unknown:
            raise BadInput(
                f"{self.kind} detector: unknown settings {sorted(unknown)} "
                f"(allowed: {', '.join(sorted(self.settings_allowed))})"
            )
        labels = settings.get("labels")
        if not isinstance(labels, Mapping) or len(labels) < 2:
            raise BadInput(
                f"{self.kind} detector: 'labels' must map at least two labels (the concept and anchors) to texts"
            )
        self.labels = {str(k): [v] if isinstance(v, str) else list(v) for k, v in labels.items()}
        self.decision = settings.get("decision", "argmax")
        if self.decision != "argmax" and not isinstance(self.decision, (int, float)):
            raise BadInput(f"{self.kind} detector: decision {self.decision!r}: use argmax or a probability threshold")
        self.zs = self._load(settings, base_dir, device)

    def _load(self, settings: Mapping[str, Any], base_dir: Path, device: str) -> ZeroShotCLIP:
        pretrained = str(settings.get("pretrained", ""))
        model = str(settings.get("model", ""))
        config_dir = settings.get("config_dir")
        if Path(pretrained).suffix:
            pretrained = str((base_dir / pretrained).resolve())
        if config_dir is not None:
            config_dir = (base_dir / config_dir).resolve()
        if not model or not pretrained:
            raise BadInput("open_clip detector: give 'model' and 'pretrained' (a cached tag or a weights path)")
        self.model_name, self.pretrained = model, pretrained
        m, preprocess, tokenizer = load_open_clip(model, pretrained, config_dir=config_dir, device=device)
        return ZeroShotCLIP(m, preprocess, tokenizer, device=device)

    def identity(self) -> dict[str, Any]:
        """What decides a score: the model, its weights' content hash, the labels and the decision."""
        from gate.provenance import hash_file

        ident: dict[str, Any] = {"type": self.kind, "model": self.model_name, "decision": self.decision}
        p = Path(self.pretrained)
        ident["pretrained"] = p.name if p.is_file() else self.pretrained
        if p.is_file():
            ident["weights_sha256"] = hash_file(p)
        ident["labels"] = self.labels
        return ident

    def check_label(self, label: str) -> None:
        if label not in self.labels:
            raise BadInput(f"{self.kind} detector has no label {label!r} (labels: {', '.join(self.labels)})")

    def score(self, images: Sequence[Any], label: str) -> tuple[list[float], list[bool]]:
        """(probability of ``label``, presence) per image."""
        self.check_label(label)
        names = list(self.labels)
        probs = self.zs.probabilities(self.zs.image_features(images), self.labels)
        j = names.index(label)
        p = probs[:, j].tolist()
        if self.decision == "argmax":
            present = (probs.argmax(-1) == j).tolist()
        else:
            present = [x >= float(self.decision) for x in p]
        return p, present
