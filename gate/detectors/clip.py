"""open_clip zero-shot detection: is the concept the best of a fixed label set?

Settings (policy ``detector:``):

    type: open_clip
    model: ViT-L-14                 # an open_clip model name
    pretrained: openai              # a tag, read from the local hub cache only, or a .safetensors path
    cache_dir: ~/models/hub         # optional: the hub cache a tag is read from (default $HF_HUB_CACHE)
    config_dir: path                # optional: folder of custom model configs (JSON)
    labels:                         # label -> texts (their mean feature stands for the label)
      skull: [a skull, a skull and crossbones]
      circle: [a circle]
    decision: argmax                # or a probability threshold, e.g. 0.5

A concept is present when its label wins (``argmax``) or its softmax probability reaches the
threshold. The score is that probability (1.0 = present). Paths are relative to the policy file;
``~`` and ``$VAR`` in them are expanded.

A tag is resolved the way open_clip resolves it (its pretrained table names a hub repo; open_clip
reads the repo's ``open_clip_model.safetensors`` through ``hf_hub_download``), offline: the file
must already be in the cache (``gate models fetch --policy P`` puts it there; see docs/offline.md).
Tags whose weights exist only as pickles are refused. The identity of a tagged detector records
the tag, the hub repo, the commit the cache holds (its revision) and the weights file's sha256.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gate.detectors.zeroshot import ZeroShotCLIP
from gate.errors import BadInput
from gate.weights import PICKLE_SUFFIXES


def load_open_clip(
    model: str,
    pretrained: str,
    *,
    config_dir: Path | None = None,
    cache_dir: Path | None = None,
    device: str = "cpu",
):
    """(model, preprocess, tokenizer), offline: a tag must already be in the local hub cache."""
    import open_clip

    from gate.hub import offline

    if config_dir is not None:
        if not config_dir.is_dir():
            raise BadInput(f"detector config_dir {config_dir}: no such folder")
        open_clip.add_model_config(config_dir)
    if model not in open_clip.list_models():
        raise BadInput(f"detector model {model!r} is not an open_clip model (nor in config_dir)")
    is_path = Path(pretrained).suffix in (".safetensors", *PICKLE_SUFFIXES)
    if is_path and not Path(pretrained).is_file():
        raise BadInput(f"detector weights {pretrained}: no such file")
    if is_path and Path(pretrained).suffix != ".safetensors":
        raise BadInput(f"detector weights {pretrained}: use .safetensors (pickled weights are not loaded)")
    try:
        with offline():  # never download at run time
            m, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=device, cache_dir=str(cache_dir) if cache_dir else None
            )
    except Exception as e:  # a tag the model does not have, or weights that do not fit it
        raise BadInput(
            f"detector {model}/{pretrained}: cannot load it offline ({type(e).__name__}: {str(e)[:200]}); "
            "put the weights in the local cache (gate models fetch --policy POLICY) or give a .safetensors path"
        ) from None
    return m, preprocess, open_clip.get_tokenizer(model)


class OpenCLIPDetector:
    """The policy-facing detector: settings in, presence decisions out."""

    kind = "open_clip"
    settings_allowed: frozenset[str] = frozenset(
        {"model", "pretrained", "config_dir", "cache_dir", "labels", "decision"}
    )
    hub: dict[str, Any] | None = None  # where a tag's weights came from: repo, revision, file

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
        from gate.hub import expand_path, open_clip_cached

        pretrained = str(settings.get("pretrained", ""))
        model = str(settings.get("model", ""))
        if not model or not pretrained:
            raise BadInput("open_clip detector: give 'model' and 'pretrained' (a cached tag or a weights path)")
        if Path(pretrained).suffix:
            pretrained = str(expand_path(pretrained, base_dir, "open_clip detector: pretrained"))
        config_dir = settings.get("config_dir")
        if config_dir is not None:
            config_dir = expand_path(config_dir, base_dir, "open_clip detector: config_dir")
        cache_dir = settings.get("cache_dir")
        if cache_dir is not None:
            cache_dir = expand_path(cache_dir, base_dir, "open_clip detector: cache_dir")
        self.model_name, self.pretrained = model, pretrained
        if not Path(pretrained).suffix:  # a tag: its safetensors file must be in the cache before open_clip looks
            src, path, commit = open_clip_cached(model, pretrained, cache_dir)
            self.hub = {"repo": src.repo, "revision": commit, "file": src.filename, "path": str(path)}
        m, preprocess, tokenizer = load_open_clip(
            model, pretrained, config_dir=config_dir, cache_dir=cache_dir, device=device
        )
        return ZeroShotCLIP(m, preprocess, tokenizer, device=device)

    def identity(self) -> dict[str, Any]:
        """What decides a score: the model, its weights (tag, hub repo and revision, content hash),
        the labels and the decision."""
        from gate.provenance import hash_file

        ident: dict[str, Any] = {"type": self.kind, "model": self.model_name, "decision": self.decision}
        p = Path(self.pretrained)
        ident["pretrained"] = p.name if p.is_file() else self.pretrained
        if p.is_file():
            ident["weights_sha256"] = hash_file(p)
        elif self.hub is not None:
            ident["hub_repo"], ident["hub_revision"] = self.hub["repo"], self.hub["revision"]
            ident["weights_file"] = self.hub["file"]
            ident["weights_sha256"] = hash_file(self.hub["path"])
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
