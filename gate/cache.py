"""On-disk cache of generated images and their detector scores.

A key covers everything that decides an image and its score: the content hashes of the
checkpoint and of the update (with the LoRA scale), the prompt, the seed, every sampler
setting, the device and dtype, the library versions that generate, and the detector's identity
and label. A cache that returns another model's images would make a gate lie, so nothing that
can change the output is left out.

Each entry is ``<key>.png`` plus ``<key>.json`` (scores, and the sha256 of the PNG bytes).
Writes are atomic (temporary file, then rename), the JSON last; on read the PNG's hash is
checked, and a missing, partial or corrupt entry is reported as a miss (and recomputed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any


def make_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ImageCache:
    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root else None
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.root is not None
        d = self.root / key[:2]
        return d / f"{key}.png", d / f"{key}.json"

    def get(self, key: str):
        """(PIL image, metadata) or None."""
        if self.root is None:
            return None
        png, meta = self._paths(key)
        if not (png.is_file() and meta.is_file()):
            self.misses += 1
            return None
        try:
            info = json.loads(meta.read_text())
            blob = png.read_bytes()
            if hashlib.sha256(blob).hexdigest() != info["png_sha256"]:
                raise ValueError("image bytes do not match their recorded hash")
            from PIL import Image

            image = Image.open(io.BytesIO(blob))
            image.load()
        except Exception:
            self.corrupt += 1
            self.misses += 1
            for p in (png, meta):
                p.unlink(missing_ok=True)
            return None
        self.hits += 1
        return image, info

    def put(self, key: str, image, info: dict[str, Any]) -> None:
        if self.root is None:
            return
        png, meta = self._paths(key)
        png.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        blob = buf.getvalue()
        _atomic_write(png, blob)
        _atomic_write(meta, json.dumps({**info, "png_sha256": hashlib.sha256(blob).hexdigest()}).encode())

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
