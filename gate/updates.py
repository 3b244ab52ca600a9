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

import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gate.errors import BadInput
from gate.weights import PICKLE_SUFFIXES, Identity, content_hash, guard, read_safetensors_header

# diffusers/peft names: unet.<module>.lora_A.weight (older diffusers: .lora.down / .lora_linear_layer.down)
_PEFT = re.compile(
    r"^(unet|text_encoder)\.(.+)\.(lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)"
    r"(\.[^.]+)?\.weight$"
)
# diffusers' attention-processor format (before peft): unet.<block>.attn1.processor.to_q_lora.down.weight
_PROCESSOR = re.compile(
    r"^(unet|text_encoder)\.(.+?)\.(?:processor\.)?(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$"
)
_PROC_NAMES = {
    "unet": {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"},
    "text_encoder": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
}
# kohya-ss (sd-scripts): lora_unet_<module path with _>.lora_down.weight, lora_te_... for the text encoder
_KOHYA = re.compile(r"^(lora_unet|lora_te[12]?)_([^.]+)\.(lora_down|lora_up)\.weight$")
_KOHYA_PART = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}
_FORMAT_WORDS = {"kohya": "kohya", "diffusers": "diffusers/peft", "unknown": "unrecognised-format"}
_UNET_KEY = re.compile(
    r"^(conv_in|conv_out|conv_norm_out|time_embedding|down_blocks|up_blocks|mid_block|"
    r"add_embedding|class_embedding|encoder_hid_proj)\."
)
_TE_KEY = re.compile(r"^(text_model\.)?(embeddings|encoder|final_layer_norm)\.")
_LDM = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")


def _refusal(flag: str, path: Path | str, form: str, message: str) -> BadInput:
    return BadInput(f"{flag} {path} ({form}): {message}")


def _header(path: Path, flag: str, form: str):
    try:
        return read_safetensors_header(path)
    except BadInput as e:  # its message starts with the path; say which input and form it is
        raise _refusal(flag, path, form, str(e).removeprefix(f"{path}: ")) from None


# ---------------------------------------------------------------------------------------
# LoRAs


def lora_file(path: Path, *, flag: str = "--update") -> Path:
    path = Path(path)
    if path.is_dir():
        cands = sorted(path.glob("*.safetensors"))
        if not cands:
            raise _refusal(flag, path, "a LoRA folder", "no .safetensors LoRA file in this folder")
        if len(cands) > 1:
            names = [c.name for c in cands]
            if "pytorch_lora_weights.safetensors" in names:
                return path / "pytorch_lora_weights.safetensors"
            raise _refusal(
                flag, path, "a LoRA folder", f"several .safetensors files ({', '.join(names)}); name the LoRA file"
            )
        return cands[0]
    if not path.is_file():
        raise _refusal(flag, path, "a LoRA file", "no such LoRA file")
    if path.suffix != ".safetensors":
        raise _refusal(flag, path, "a LoRA file", "LoRA files must be .safetensors (pickled weights are never loaded)")
    return path


def lora_format(keys: list[str]) -> str:
    """kohya, diffusers (diffusers/peft names) or unknown."""
    if any(_KOHYA.match(k) for k in keys):
        return "kohya"
    if any(_PEFT.match(k) or _PROCESSOR.match(k) for k in keys):
        return "diffusers"
    return "unknown"


def _lora_form(keys: list[str], *, folder: bool = False) -> str:
    return f"a {_FORMAT_WORDS[lora_format(keys)]} LoRA {'folder' if folder else 'file'}"


def _file_modules(keys: list[str], shapes: dict[str, list[int]]) -> dict[tuple[str, str], dict[str, list[int]]]:
    """(component, module name as the file spells it) -> {"down": shape, "up": shape}."""
    modules: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(dict)
    for k in keys:
        if m := _KOHYA.match(k):
            name = f"{m.group(1)}_{m.group(2)}"  # the file's own name, for messages
            modules[(_KOHYA_PART[m.group(1)], name)]["down" if m.group(3) == "lora_down" else "up"] = shapes[k]
        elif m := _PEFT.match(k):
            kind = m.group(3)
            modules[(m.group(1), m.group(2))]["down" if kind == "lora_A" or kind.endswith("down") else "up"] = shapes[k]
        elif m := _PROCESSOR.match(k):
            comp = m.group(1)
            modules[(comp, f"{m.group(2)}.{_PROC_NAMES[comp][m.group(3)]}")][m.group(4)] = shapes[k]
    return dict(modules)


def _model_name(table: dict[str, object], underscored: dict[str, str], name: str, kohya: bool) -> str | None:
    """The model's own name for a LoRA module (None: no such layer). kohya joins the path with _;
    text-encoder names may carry the text_model. prefix that transformers 5 no longer has."""
    if kohya:
        name = name.split("_", 2)[2]  # lora_unet_<path>, lora_te_<path>, lora_te1_<path>
        return next((underscored[c] for c in (name, name.removeprefix("text_model_")) if c in underscored), None)
    return next((c for c in (name, name.removeprefix("text_model.")) if c in table), None)


def _components(pipe) -> dict[str, object]:
    return {c: m for c in ("unet", "text_encoder", "text_encoder_2") if (m := getattr(pipe, c, None)) is not None}


@dataclass
class _LoraPlan:
    form: str
    format: str
    modules: dict[str, dict[str, str]]  # component -> {model's module name: the file's name}
    keys: int

    def counts(self) -> dict[str, int | str]:
        return {
            "unet": len(self.modules.get("unet", {})),
            "text_encoder": len(self.modules.get("text_encoder", {})),
            "format": self.format,
        }


def _plan(pipe, path: Path, flag: str) -> _LoraPlan:
    keys, shapes, _ = _header(path, flag, "a LoRA file")
    fmt = lora_format(keys)
    form = _lora_form(keys)
    if not keys:
        raise _refusal(flag, path, form, "holds no LoRA weights")
    modules = _file_modules(keys, shapes)
    if not modules:
        return _LoraPlan(form, fmt, {}, len(keys))  # another key format: checked after diffusers reads it
    named: dict[str, dict[str, object]] = {c: dict(m.named_modules()) for c, m in _components(pipe).items()}  # type: ignore[attr-defined]
    underscored = {c: {n.replace(".", "_"): n for n in t} for c, t in named.items()} if fmt == "kohya" else {}
    problems: list[str] = []
    misfits = 0
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for (comp, mod), sh in modules.items():
        label = mod if fmt == "kohya" else f"{comp}.{mod}"
        before = len(problems)
        if comp not in named:
            problems.append(f"{mod}: names a {comp}, which this pipeline does not have")
            misfits += 1
            continue
        real = _model_name(named[comp], underscored.get(comp, {}), mod, fmt == "kohya")
        layer = named[comp].get(real) if real else None
        if layer is None or not hasattr(layer, "weight"):
            problems.append(f"{label}: no such layer in this model")
            misfits += 1
            continue
        w = layer.weight
        out_f, in_f = w.shape[0], w.shape[1]
        if "down" in sh and sh["down"][1] != in_f:
            problems.append(f"{label}: LoRA input size {sh['down'][1]}, layer takes {in_f}")
        if "up" in sh and sh["up"][0] != out_f:
            problems.append(f"{label}: LoRA output size {sh['up'][0]}, layer gives {out_f}")
        if len(problems) > before:
            misfits += 1
            continue
        found[comp][real] = label  # type: ignore[index]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise _refusal(
            flag,
            path,
            form,
            f"{misfits} of its {len(modules)} LoRA modules do not fit: this LoRA "
            f"was built for another architecture ({shown}); use a LoRA trained on this model",
        )
    return _LoraPlan(form, fmt, dict(found), len(keys))


def check_lora_fits(pipe, path: Path, *, flag: str = "--update") -> dict[str, int | str]:
    """Raises BadInput unless every LoRA module of ``path`` (diffusers/peft or kohya keys) names a
    layer of ``pipe`` with its sizes. Returns the modules per component and the key format."""
    return _plan(pipe, path, flag).counts()


def injected_layers(pipe, adapter_name: str = "candidate") -> dict[str, set[str]]:
    """Component -> the names of the layers that carry ``adapter_name``'s LoRA weights."""
    suffix = f".lora_A.{adapter_name}"
    return {
        c: {n.removesuffix(suffix) for n, _ in m.named_modules() if n.endswith(suffix)}  # type: ignore[attr-defined]
        for c, m in _components(pipe).items()
    }


def check_applied(
    pipe, plan: _LoraPlan, path: Path, *, adapter_name: str = "candidate", flag: str = "--update"
) -> None:
    """Raises BadInput unless every module of the file became a LoRA layer of ``pipe``."""
    got = injected_layers(pipe, adapter_name)
    if not plan.modules:  # a format the pre-flight cannot read: at least something must have been applied
        if not any(got.values()):
            raise _refusal(
                flag, path, plan.form, "none of this LoRA's layers match the model; use a LoRA trained on this model"
            )
        return
    short = []
    for comp, wanted in plan.modules.items():
        missing = [wanted[n] for n in wanted if n not in got.get(comp, set())]
        if missing:
            short.append(
                f"{len(wanted) - len(missing)} of {len(wanted)} {comp} modules applied "
                f"(not applied: {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
            )
    if short:
        raise _refusal(
            flag,
            path,
            plan.form,
            f"diffusers applied this LoRA only in part: {'; '.join(short)}; "
            "a partly applied LoRA is refused (the gate would judge a model the update never made)",
        )


def load_lora(
    pipe, path: Path, *, scale: float = 1.0, adapter_name: str = "candidate", flag: str = "--update"
) -> dict[str, int | str]:
    """Checks, loads and (at ``scale``) activates a LoRA on ``pipe``, then checks that every module
    of the file was applied. Safetensors only. Returns the modules per component and the format."""
    path = lora_file(path, flag=flag)
    plan = _plan(pipe, path, flag)
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()  # diffusers warns for each component a LoRA leaves alone; completeness is checked below
    try:
        pipe.load_lora_weights(
            str(path.parent),
            weight_name=path.name,
            adapter_name=adapter_name,
            use_safetensors=True,
            local_files_only=True,
        )
    except (ValueError, RuntimeError, KeyError) as e:
        msg = f"does not fit the model ({type(e).__name__}: {str(e)[:300]})"
        raise _refusal(flag, path, plan.form, msg) from None
    finally:
        dlog.set_verbosity(level)
    check_applied(pipe, plan, path, adapter_name=adapter_name, flag=flag)
    pipe.set_adapters([adapter_name], adapter_weights=[scale])
    if plan.modules:
        return plan.counts()
    got = injected_layers(pipe, adapter_name)
    return {"unet": len(got.get("unet", ())), "text_encoder": len(got.get("text_encoder", ())), "format": plan.format}


# ---------------------------------------------------------------------------------------
# full weights: a diffusers pipeline folder, a bare UNet folder, a state-dict file

FULL, UNET_DIR = "a diffusers pipeline folder", "a bare UNet folder"


def _weights_of(folder: Path, allow_pickle: bool, where: tuple[str, Path, str]) -> bool:
    """True when ``folder`` holds safetensors weights; pickles only with ``allow_pickle``."""
    flag, path, form = where
    if any(folder.glob("*.safetensors")):
        return True
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES] if folder.is_dir() else []
    label = "it" if folder == path else f"its {folder.name}/"
    if pickles and not allow_pickle:
        raise _refusal(
            flag,
            path,
            form,
            f"{label} holds only pickle weights ({', '.join(pickles)}); pickles "
            "can run code and are refused: convert them to .safetensors, or pass --allow-pickle",
        )
    if not pickles:
        raise _refusal(flag, path, form, f"{label} holds no weights file")
    return False


def _read_unet(folder: Path, where: tuple[str, Path, str], allow_pickle: bool = False):
    from diffusers import UNet2DConditionModel

    safe = _weights_of(folder, allow_pickle, where)
    flag, path, form = where
    return guard(
        lambda: UNet2DConditionModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=safe),
        f"{flag} {path} ({form}{', unet' if folder != path else ''})",
    )


def _arch_diff(own: dict, cfg: dict) -> list[str]:
    # keys such as _name_or_path and _diffusers_version record where and how a folder was saved,
    # not the architecture; every other key both configs have must match
    return sorted(k for k in cfg if not k.startswith("_") and k in own and _norm(cfg[k]) != _norm(own[k]))


def _norm(v):
    return list(v) if isinstance(v, tuple | list) else v


def _config(path: Path, where: tuple[str, Path, str]) -> dict:
    flag, p, form = where
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _refusal(
            flag, p, form, f"unreadable {path.relative_to(p) if path != p else path.name} ({type(e).__name__})"
        ) from None


def _unet_config_fits(pipe, folder: Path, where: tuple[str, Path, str]) -> None:
    """Preflight of a UNet folder: its config.json must describe the checkpoint's architecture."""
    cfg = _config(folder / "config.json", where)
    diff = _arch_diff(dict(pipe.unet.config), cfg)
    if diff:
        raise _refusal(
            *where, f"its UNet is another architecture than the checkpoint's (differs in {', '.join(diff[:5])})"
        )


def _text_config_fits(pipe, folder: Path, where: tuple[str, Path, str]) -> None:
    cfg = _config(folder / "config.json", where)
    own = pipe.text_encoder.config.to_dict()
    keys = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
        "hidden_act",
        "projection_dim",
    )
    diff = [k for k in keys if k in cfg and k in own and cfg[k] != own[k]]
    if diff:
        raise _refusal(
            *where, f"its text encoder is another architecture than the checkpoint's (differs in {', '.join(diff[:5])})"
        )


def _same_architecture(pipe, unet, where: tuple[str, Path, str]) -> None:
    own = {k: v for k, v in pipe.unet.config.items() if k == "_class_name" or not k.startswith("_")}
    cfg = {k: v for k, v in unet.config.items() if k == "_class_name" or not k.startswith("_")}
    diff = sorted(k for k in set(own) | set(cfg) if _norm(own.get(k)) != _norm(cfg.get(k)))
    if diff:
        raise _refusal(
            *where, f"its UNet is another architecture than the checkpoint's (differs in {', '.join(diff[:5])})"
        )


def _full_preflight(pipe, p: Path, allow_pickle: bool) -> None:
    where = ("--update", p, FULL)
    if not (p / "unet").is_dir():
        raise _refusal(*where, "no unet/ subfolder")
    if not (p / "unet" / "config.json").is_file():
        raise _refusal(*where, "no unet/config.json in this diffusers folder")
    _unet_config_fits(pipe, p / "unet", where)
    _weights_of(p / "unet", allow_pickle, where)
    if (p / "text_encoder").is_dir():
        _text_config_fits(pipe, p / "text_encoder", where)
        _weights_of(p / "text_encoder", allow_pickle, where)


def _load_full_folder(pipe, p: Path, allow_pickle: bool) -> None:
    from transformers import CLIPTextModel

    where = ("--update", p, FULL)
    _full_preflight(pipe, p, allow_pickle)
    unet = _read_unet(p / "unet", where, allow_pickle)
    _same_architecture(pipe, unet, where)
    pipe.unet.load_state_dict(unet.state_dict())
    te_dir = p / "text_encoder"
    if te_dir.is_dir():
        safe = _weights_of(te_dir, allow_pickle, where)
        te = guard(
            lambda: CLIPTextModel.from_pretrained(str(te_dir), local_files_only=True, use_safetensors=safe),
            f"--update {p} ({FULL}, text encoder)",
        )
        _load_strict(pipe.text_encoder, te.state_dict(), where, "text encoder")


def _load_unet_folder(pipe, p: Path, allow_pickle: bool) -> None:
    where = ("--update", p, UNET_DIR)
    unet = _read_unet(p, where, allow_pickle)
    _same_architecture(pipe, unet, where)
    pipe.unet.load_state_dict(unet.state_dict())


def _load_strict(module, state: dict, where: tuple[str, Path, str], part: str, partial: bool = False) -> None:
    own = module.state_dict()
    unknown = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [] if partial else [k for k in own if k not in state]
    if unknown or wrong or missing:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown keys (e.g. {unknown[0]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        raise _refusal(*where, f"its {part} does not fit this model: {'; '.join(parts)}")
    module.load_state_dict(state, strict=False)


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
