"""open_clip zero-shot detection: is the concept the best of a fixed label set?

Settings (policy ``detector:``):

    type: open_clip
    model: ViT-L-14                 # an open_clip model name
    pretrained: openai              # a tag, resolved from the local cache only, or a weights file path;
                                    # "@world" = the small world's shipped detector
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

from gate.errors import BadInput

WORLD = "@world"


class ZeroShotCLIP:
    """Zero-shot helpers over any open_clip (model, preprocess, tokenizer)."""

    def __init__(self, model, preprocess, tokenizer, device: str = "cpu") -> None:
        import torch

        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self._torch = torch
        self._text_cache: dict[tuple[str, ...], Any] = {}

    def image_features(self, images: Sequence[Any], batch: int = 256):
        torch = self._torch
        feats = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = torch.stack([self.preprocess(im) for im in images[i : i + batch]]).to(self.device)
                f = self.model.encode_image(x).float()
                feats.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(feats)

    def text_features(self, texts: Sequence[str]):
        key = tuple(texts)
        if key not in self._text_cache:
            with self._torch.no_grad():
                f = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()
            self._text_cache[key] = f / f.norm(dim=-1, keepdim=True)
        return self._text_cache[key]

    def label_features(self, labels: Mapping[str, Sequence[str]]):
        feats = []
        for texts in labels.values():
            f = self.text_features(list(texts)).mean(0)
            feats.append(f / f.norm())
        return self._torch.stack(feats)

    def probabilities(self, image_feats, labels: Mapping[str, Sequence[str]]):
        """Softmax over the labels, with the model's learned temperature."""
        scale = self.model.logit_scale.exp().float()
        return (scale * image_feats @ self.label_features(labels).t()).softmax(-1)

    def classify(self, images: Sequence[Any], labels: Mapping[str, Sequence[str]]) -> list[str]:
        names = list(labels)
        probs = self.probabilities(self.image_features(images), labels)
        return [names[i] for i in probs.argmax(-1).tolist()]


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

    def __init__(self, settings: Mapping[str, Any], *, base_dir: Path = Path("."), device: str = "cpu") -> None:
        unknown = set(settings) - {"model", "pretrained", "config_dir", "labels", "decision"}
        if unknown:
            raise BadInput(
                f"open_clip detector: unknown settings {sorted(unknown)} "
                "(allowed: model, pretrained, config_dir, labels, decision)"
            )
        labels = settings.get("labels")
        if not isinstance(labels, Mapping) or len(labels) < 2:
            raise BadInput(
                "open_clip detector: 'labels' must map at least two labels (the concept and anchors) to texts"
            )
        self.labels = {str(k): [v] if isinstance(v, str) else list(v) for k, v in labels.items()}
        self.decision = settings.get("decision", "argmax")
        if self.decision != "argmax" and not isinstance(self.decision, (int, float)):
            raise BadInput(f"open_clip detector: decision {self.decision!r}: use argmax or a probability threshold")
        pretrained = str(settings.get("pretrained", ""))
        model = str(settings.get("model", ""))
        config_dir = settings.get("config_dir")
        if pretrained == WORLD:
            from gate.world.clip import CLIP_DIR, CLIP_WEIGHTS
            from gate.world.models import CLIP_MODEL_NAME

            model = model or CLIP_MODEL_NAME
            config_dir, pretrained = CLIP_DIR, str(CLIP_DIR / CLIP_WEIGHTS)
        elif Path(pretrained).suffix:
            pretrained = str((base_dir / pretrained).resolve())
        if config_dir is not None:
            config_dir = (base_dir / config_dir).resolve()
        if not model or not pretrained:
            raise BadInput("open_clip detector: give 'model' and 'pretrained' (a cached tag or a weights path)")
        self.model_name, self.pretrained = model, pretrained
        m, preprocess, tokenizer = load_open_clip(model, pretrained, config_dir=config_dir, device=device)
        self.zs = ZeroShotCLIP(m, preprocess, tokenizer, device=device)

    def identity(self) -> dict[str, Any]:
        from gate.sd import hash_file

        ident: dict[str, Any] = {"type": "open_clip", "model": self.model_name, "decision": self.decision}
        p = Path(self.pretrained)
        ident["pretrained"] = p.name if p.is_file() else self.pretrained
        if p.is_file():
            ident["weights_sha256"] = hash_file(p)
        return ident

    def check_label(self, label: str) -> None:
        if label not in self.labels:
            raise BadInput(f"open_clip detector has no label {label!r} (labels: {', '.join(self.labels)})")

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
