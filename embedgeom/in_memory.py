"""Models in memory as encoders: a ``sentence_transformers.SentenceTransformer``, or a ``(transformers.PreTrainedModel,
tokenizer)`` pair - the one in-memory form :func:`embedgeom.load_encoder`, :func:`embedgeom.encode` and
:func:`embedgeom.analyze` accept.

Identity: the embedding cache keys a model in memory by a sha256 of its config (without private and
version fields), its state dict (every tensor's name, dtype, shape and bytes) and its tokenizer's fingerprint -
never by an object id - so the same weights hit the cache in another process, and a model whose weights changed
since the last call (an optimiser step, ``load_state_dict``) misses it. The digest is memoised per model while
every parameter's in-place counter and storage address are unchanged (hashing reads every weight once).

Side effects on the caller's objects: the model is put in eval mode (dropout off) and, only when ``device`` names
one, moved there (``device="auto"`` keeps the model where it is); its attention implementation is switched to
eager for the duration of an attention-pooling pass only. A tokenizer without a padding token is copied before one
is set on the copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import weakref
from typing import Any

import torch

from .devices import resolve_device
from .loading import (
    CheckpointError,
    DenseLayer,
    Encoder,
    NativePooling,
    _encoder_stack,
    _pad_token,
    _param_versions,
    _wants_eos,
    model_family,
    resolve_compute_dtype,
    state_dict_hash,
    tokenizer_fingerprint,
)

_DIGESTS: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], str]] = weakref.WeakKeyDictionary()
_FORM = "a SentenceTransformer or a (transformers.PreTrainedModel, tokenizer) pair"


def _config_json(config: Any) -> str:
    d = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    return json.dumps(d, sort_keys=True, default=str)


def memory_hash(model: Any, tokenizer_hash: str) -> str:
    """The cache identity of ``model`` in memory with a tokenizer of fingerprint ``tokenizer_hash`` (see the module
    docstring), memoised while its weights are unchanged."""
    now = _param_versions(model)
    hit = _DIGESTS.get(model)
    if hit is None or hit[0] != now:
        hit = (now, state_dict_hash(model, _config_json(model.config)))
        _DIGESTS[model] = hit
    return "mem-" + hashlib.sha256(f"{hit[1]}|{tokenizer_hash}".encode()).hexdigest()


def _is_sentence_transformer(obj: Any) -> bool:
    return any(c.__name__ == "SentenceTransformer" and c.__module__.startswith("sentence_transformers")
               for c in type(obj).__mro__)


def _st_parts(st: Any) -> tuple[Any, Any, NativePooling | None, str | None, int | None]:
    """A SentenceTransformer's transformer model, tokenizer, declared pooling (or why it is unusable) and its
    max_seq_length."""
    modules = list(st)
    first = modules[0] if modules else None
    model = getattr(first, "auto_model", None)
    tokenizer = getattr(first, "tokenizer", None)
    if model is None or tokenizer is None:
        raise CheckpointError(f"checkpoint: the SentenceTransformer's first module ({type(first).__name__}) is not a "
                              "Transformer module with a model and a tokenizer; only transformer-based "
                              "sentence-transformers models are supported.")
    modes: tuple[str, ...] = ()
    dense: list[DenseLayer] = []
    normalize, include_prompt, why = False, True, None
    names = {"cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len",
             "weightedmean": "weightedmean", "lasttoken": "lasttoken"}
    for m in modules[1:]:
        kind = type(m).__name__
        if kind == "Pooling":
            declared = m.pooling_mode
            declared = (declared,) if isinstance(declared, str) else tuple(declared)
            if any(d not in names for d in declared):
                why = f"pooling mode {declared!r} is not supported"
            modes = tuple(names.get(d, d) for d in declared)
            include_prompt = bool(getattr(m, "include_prompt", True))
        elif kind == "Dense":
            act = type(m.activation_function).__name__
            if act not in ("Identity", "Tanh", "ReLU", "GELU") or getattr(m, "use_residual", False):
                why = f"Dense activation {act} is not supported"
            dense.append(DenseLayer(m.linear.weight.detach().to("cpu", torch.float32).clone(),
                                    None if m.linear.bias is None else
                                    m.linear.bias.detach().to("cpu", torch.float32).clone(), act))
        elif kind == "Normalize":
            normalize = True
        else:
            why = f"module type {kind} is not supported"
    if not modes:
        why = why or "no Pooling module"
    native = None if why else NativePooling(modes, tuple(dense), normalize, include_prompt)
    max_seq = getattr(st, "max_seq_length", None)
    return model, tokenizer, native, why, max_seq if isinstance(max_seq, int) else None


def in_memory_encoder(spec: Any, *, device: str | torch.device = "auto", dtype: str = "auto",
                      max_length: int | None = None, append_eos: bool | None = None) -> Encoder:
    """An :class:`~embedgeom.loading.Encoder` over a model in memory (see the module docstring)."""
    native, why, st_max, prompts, default_prompt = None, None, None, {}, None
    if _is_sentence_transformer(spec):
        model, tokenizer, native, why, st_max = _st_parts(spec)
        prompts = {k: v for k, v in (getattr(spec, "prompts", None) or {}).items() if isinstance(v, str)}
        default_prompt = getattr(spec, "default_prompt_name", None)
        kind = "sentence-transformers"
    elif isinstance(spec, tuple) and len(spec) == 2:
        model, tokenizer = spec
        kind = "hf"
        if not (callable(tokenizer) and hasattr(tokenizer, "pad") and hasattr(tokenizer, "get_vocab")):
            raise CheckpointError(f"checkpoint: expected {_FORM}, got a pair whose second item is "
                                  f"{type(tokenizer).__name__}, not a transformers tokenizer.")
    else:
        raise CheckpointError(f"checkpoint: expected {_FORM} in memory, got {type(spec).__name__}"
                              f"{' (pass its tokenizer too: (model, tokenizer))' if hasattr(spec, 'config') else ''}.")
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "model_type"):
        raise CheckpointError(f"checkpoint: expected {_FORM}, got a {type(model).__name__} without a transformers "
                              "config.")
    label = f"memory:{getattr(config, '_name_or_path', '') or type(model).__name__}"
    family = model_family(config, label)
    model = _encoder_stack(model, family)
    if device == "auto":
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    else:
        dev = resolve_device(device)
        model.to(dev)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer = copy.deepcopy(tokenizer)
    info: dict[str, Any] = {"attention_pooling_source": "eager-attentions", "in_memory": True}
    pad = _pad_token(tokenizer, label)
    if pad:
        info["pad_token"] = pad
    if kind == "sentence-transformers" and native is None:
        info["native_unavailable"] = why
    limits = [int(getattr(config, "max_position_embeddings", 512))]
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        limits.append(tml)
    if st_max:
        limits.append(st_max)
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length: expected an integer >= 2, got {max_length!r}.")
        limits = [min(max_length, limits[0])]
    tok_hash = tokenizer_fingerprint(tokenizer)
    return Encoder(model=model, tokenizer=tokenizer, spec=label, path=None, kind=kind, device=dev,
                   compute_dtype=resolve_compute_dtype(dtype, dev), max_length=min(limits),
                   content_hash=memory_hash(model, tok_hash), native=native, tokenizer_hash=tok_hash, info=info,
                   dtype_policy="auto" if dtype == "auto" else "fixed", family=family,
                   append_eos=_wants_eos(tokenizer, family, kind == "sentence-transformers", append_eos),
                   prompts=prompts, default_prompt_name=default_prompt if default_prompt in prompts else None)
