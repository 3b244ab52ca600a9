"""Zero-shot classification over any open_clip (model, preprocess, tokenizer): image and text
features, label probabilities with prompt ensembles (a label's feature is the mean over its
texts). Shared by the open_clip detector and the small world's detector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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
