"""LoRA updates: recognised by their key names (diffusers/peft or kohya), checked against the
model before loading (every module must name a layer of this UNet / text encoder with matching
sizes), loaded with diffusers' own ``load_lora_weights``, and counted after loading per component
against the modules the file holds, so that a partly applied LoRA is refused. ``gate.updates``
puts them in its table beside the full-weight forms; the shared refusal helpers live here.
"""

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from gate.errors import BadInput
from gate.weights import read_safetensors_header

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
