"""Applying a candidate update to a pipeline, refusing anything that does not fit it.

One table, ``UPDATE_KINDS``, says for each kind of update how it is recognised, what is checked
before any image is made (``preflight``) and how it is applied (``apply``); ``gate.model``'s
``preflight_update`` and ``apply_update`` both read it, so the two can never disagree.

An update is recognised by what it is, from its files (``update_kind``, ``update_form``): a LoRA
file or folder (diffusers/peft or kohya keys), a diffusers pipeline folder, a bare UNet folder,
a UNet or text-encoder state-dict file (or an original-SD single-file checkpoint, refused as an
update). Every refusal names the form it detected: ``--update X (a bare UNet folder): ...``.

A LoRA is checked against the model before it is loaded: every LoRA module must name a layer
of this UNet / text encoder, with matching input and output sizes. After loading, the layers
diffusers/peft injected are counted per component against the modules the file holds: diffusers
on its own skips keys it cannot place (a warning, then a partly or wholly unchanged model); for a
safety gate that would pass an update that was never (fully) applied, so it is an error here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gate.errors import BadInput
from gate.lora import (
    _LDM,
    _TE_KEY,
    _UNET_KEY,
    _header,
    _lora_form,
    _refusal,
    check_lora_fits,
    load_lora,
    lora_file,
    lora_format,
)
from gate.update_folders import (
    FULL,
    UNET_DIR,
    _full_preflight,
    _load_full_folder,
    _load_strict,
    _load_unet_folder,
    _unet_config_fits,
    _weights_of,
)
from gate.weights import PICKLE_SUFFIXES, Identity, content_hash

# ---------------------------------------------------------------------------------------
# state-dict files


def _split_state(pipe, keys) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(unet: file key -> model key, text encoder: file key -> model key, keys that name neither)."""
    unet_own = set(pipe.unet.state_dict())
    te_own = set(pipe.text_encoder.state_dict())
    unet, te, other = {}, {}, []
    for k in keys:
        if k.startswith("unet."):
            unet[k] = k.removeprefix("unet.")
        elif k.startswith("text_encoder.") or _TE_KEY.match(k):
            bare = k.removeprefix("text_encoder.")
            te[k] = bare if bare in te_own else bare.removeprefix("text_model.")
        elif k in unet_own or _UNET_KEY.match(k):
            unet[k] = k
        elif k in te_own:
            te[k] = k
        else:
            other.append(k)
    return unet, te, other


def state_form(keys: list[str]) -> str:
    """The form of a safetensors state-dict file, from its keys."""
    if any(k.startswith(_LDM) for k in keys):
        return "an original-SD single-file checkpoint"
    has_unet = any(k.startswith("unet.") or _UNET_KEY.match(k) for k in keys)
    has_te = any(k.startswith("text_encoder.") or _TE_KEY.match(k) for k in keys)
    if has_unet and has_te:
        return "a UNet and text-encoder state-dict file"
    if has_unet:
        return "a UNet state-dict file"
    if has_te:
        return "a text-encoder state-dict file"
    return "a state-dict file with neither UNet nor text-encoder keys"


def _state_file_fits(pipe, p: Path) -> None:
    if p.suffix != ".safetensors":
        return  # a pickle (allowed by the user) is checked when it is read, with weights_only=True
    keys, shapes, _ = _header(p, "--update", "a state-dict file")
    form = state_form(keys)
    if form.startswith("an original-SD"):
        raise _refusal(
            "--update",
            p,
            form,
            "a whole model in the original-SD layout is not an update; give it as "
            "--checkpoint FILE --config FOLDER, or save its UNet with diffusers and pass that folder",
        )
    unet, te, other = _split_state(pipe, keys)
    if not unet and not te:
        raise _refusal(
            "--update",
            p,
            form,
            f"none of its {len(keys)} tensors names a UNet or text-encoder weight "
            f"(e.g. {keys[0] if keys else 'no tensors at all'})",
        )
    own = {
        **{("u", k): v.shape for k, v in pipe.unet.state_dict().items()},
        **{("t", k): v.shape for k, v in pipe.text_encoder.state_dict().items()},
    }
    bad = list(other)
    for side, table in (("u", unet), ("t", te)):
        bad += [k for k, m in table.items() if (side, m) not in own or tuple(own[(side, m)]) != tuple(shapes[k])]
    if bad:
        raise _refusal(
            "--update",
            p,
            form,
            f"{len(bad)} of its {len(keys)} tensors do not fit this model (unknown "
            f"key or other shape; e.g. {', '.join(bad[:3])})",
        )


def _load_state_file(pipe, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        _state_file_fits(pipe, path)
        form = state_form(_header(path, "--update", "a state-dict file")[0])
        state = load_file(str(path))
    else:
        import torch

        form = "a pickle state-dict file"
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise _refusal(
                "--update", path, form, f"not a plain tensor state dict ({type(e).__name__}); refused"
            ) from None
        if not isinstance(state, dict):
            raise _refusal("--update", path, form, "expected a state dict of tensors")
    unet, te, other = _split_state(pipe, list(state))
    where = ("--update", path, form)
    if other:
        raise _refusal(*where, f"{len(other)} tensors name neither a UNet nor a text-encoder weight (e.g. {other[0]})")
    if not unet and not te:
        raise _refusal(*where, "holds no tensors")
    if unet:
        _load_strict(pipe.unet, {m: state[k] for k, m in unet.items()}, where, "UNet part", partial=True)
    if te:
        _load_strict(pipe.text_encoder, {m: state[k] for k, m in te.items()}, where, "text-encoder part", partial=True)


# ---------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class UpdateKind:
    name: str
    describe: str
    preflight: Callable[[object, Path, bool], None]  # (pipe, path, allow_pickle): raises BadInput
    apply: Callable[[object, Path, float, bool], Identity]  # (pipe, path, lora_scale, allow_pickle)


def _lora_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    check_lora_fits(pipe, lora_file(p))


def _lora_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    f = lora_file(p)
    counts = load_lora(pipe, f, scale=scale)
    return Identity("lora", str(f), content_hash(f), {"scale": scale, "modules": counts})


def _full_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    _load_full_folder(pipe, p, allow_pickle)
    return Identity("full-folder", str(p), content_hash(p))


def _unet_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    _unet_config_fits(pipe, p, ("--update", p, UNET_DIR))
    _weights_of(p, allow_pickle, ("--update", p, UNET_DIR))


def _unet_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    _load_unet_folder(pipe, p, allow_pickle)
    return Identity("unet-folder", str(p), content_hash(p))


def _refuse_pickle(p: Path, allow_pickle: bool) -> None:
    if p.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise _refusal(
            "--update",
            p,
            "a pickle state-dict file",
            "pickles can run code and are refused; convert it "
            "to .safetensors, or pass --allow-pickle to read it with torch.load(weights_only=True)",
        )


def _weights_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    _refuse_pickle(p, allow_pickle)
    _state_file_fits(pipe, p)


def _weights_apply(pipe, p: Path, scale: float, allow_pickle: bool) -> Identity:
    _refuse_pickle(p, allow_pickle)
    _load_state_file(pipe, p)
    return Identity("weights-file", str(p), content_hash(p))


UPDATE_KINDS: dict[str, UpdateKind] = {
    "lora": UpdateKind(
        "lora", "a LoRA .safetensors (diffusers, peft or kohya keys), or a folder holding one",
        _lora_preflight, _lora_apply,
    ),
    "full-folder": UpdateKind(
        "full-folder", "a fine-tuned diffusers pipeline folder (unet/, optionally text_encoder/)",
        _full_preflight, _full_apply,
    ),
    "unet-folder": UpdateKind(
        "unet-folder", "a bare UNet folder (config.json + diffusion_pytorch_model.safetensors)",
        _unet_preflight, _unet_apply,
    ),
    "weights": UpdateKind(
        "weights", "a UNet / text-encoder state dict (.safetensors; pickles only with --allow-pickle)",
        _weights_preflight, _weights_apply,
    ),
}  # fmt: skip


def update_kind(spec: str) -> str:
    """Which row of ``UPDATE_KINDS`` an ``--update`` is, from its files (nothing is loaded)."""
    p = Path(spec)
    if p.is_dir():
        if (p / "model_index.json").is_file() or (p / "unet").is_dir():
            return "full-folder"
        if (p / "config.json").is_file() and any(p.glob("diffusion_pytorch_model*")):
            return "unet-folder"
        if any(p.glob("*.safetensors")):
            return "lora"
        raise BadInput(f"--update {spec} (a folder): neither a diffusers pipeline (model_index.json or unet/), a bare "
                       "UNet (config.json + diffusion_pytorch_model.safetensors) nor a .safetensors LoRA")  # fmt: skip
    if not p.is_file():
        raise BadInput(f"--update {spec}: no such file or folder")
    if p.suffix in PICKLE_SUFFIXES:
        return "weights"
    if p.suffix != ".safetensors":
        raise BadInput(f"--update {spec} (a {p.suffix or 'suffix-less'} file): unknown file type (give .safetensors "
                       "or a diffusers folder)")  # fmt: skip
    keys, _, _ = _header(p, "--update", "a .safetensors file")
    return "lora" if lora_format(keys) != "unknown" or any("lora" in k for k in keys) else "weights"


def update_form(spec: str) -> str:
    """The ``--update``'s form in words, as refusals name it (e.g. "a kohya LoRA file")."""
    p = Path(spec)
    kind = update_kind(spec)
    if kind == "full-folder":
        return FULL
    if kind == "unet-folder":
        return UNET_DIR
    if kind == "lora":
        f = lora_file(p)
        return _lora_form(_header(f, "--update", "a LoRA file")[0], folder=p.is_dir())
    if p.suffix in PICKLE_SUFFIXES:
        return "a pickle state-dict file"
    return state_form(_header(p, "--update", "a state-dict file")[0])
