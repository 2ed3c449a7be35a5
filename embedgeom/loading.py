"""Checkpoint -> model + tokenizer. The only module that knows checkpoint formats.

Accepted specs:

* a local Hugging Face model directory (``config.json`` + weights + tokenizer);
* a sentence-transformers directory (``modules.json``): its declared pooling (``1_Pooling``), Dense layers
  and ``Normalize`` module become the ``native`` pooling; its ``max_seq_length`` is the default max length;
* a run directory or checkpoint written by :mod:`trainer` (``run.json`` -> its latest checkpoint);
* a hub id (``org/name``): loaded from the local Hugging Face cache, or downloaded when online.

Safety: safetensors weights are preferred; ``.bin`` files are read by transformers' ``weights_only``
unpickler, which refuses arbitrary objects; ``trust_remote_code`` is False unless the caller passes True.
Decoder-only, encoder-decoder and non-text checkpoints are refused with a clear error (no last-token path).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from .devices import resolve_device

ComputeDtype = Literal["auto", "float32", "bfloat16", "float16"]
COMPUTE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_DECODER_ONLY = {"gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3",
                 "phi", "phi3", "gemma", "gemma2", "gemma3", "falcon", "opt", "bloom", "mpt", "olmo", "olmo2",
                 "codegen", "starcoder2", "stablelm"}


class CheckpointError(ValueError):
    """A checkpoint could not be found or is not a supported text encoder."""


@dataclass(frozen=True)
class DenseLayer:
    """A sentence-transformers Dense module: y = activation(W x + b)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str


@dataclass(frozen=True)
class NativePooling:
    """What a sentence-transformers checkpoint declares: pooling mode(s), Dense layers, Normalize."""

    modes: tuple[str, ...]  # subset of mean / cls / max / mean_sqrt_len, concatenated in ST's order
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False
    include_prompt: bool = True

    def describe(self) -> str:
        parts = ["+".join(self.modes)]
        parts += [f"dense({d.weight.shape[1]}->{d.weight.shape[0]}, {d.activation})" for d in self.dense]
        if self.normalize:
            parts.append("L2-normalize")
        return " -> ".join(parts)

    def fingerprint(self) -> str:
        """sha256 over everything that changes a native vector: modes, each Dense layer's weights, bias and
        activation, Normalize and include_prompt (the embedding cache keys ``native`` vectors by it)."""
        h = hashlib.sha256(json.dumps([self.modes, self.normalize, self.include_prompt]).encode())
        for d in self.dense:
            h.update(d.activation.encode())
            for t in (d.weight, d.bias):
                h.update(b"|" if t is None else t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()


@dataclass
class Encoder:
    """A loaded text encoder: model (eval mode, on ``device``), tokenizer and where they came from."""

    model: Any
    tokenizer: Any
    spec: str
    path: Path | None
    kind: Literal["hf", "sentence-transformers", "trainer", "hub"]
    device: torch.device
    compute_dtype: torch.dtype
    max_length: int
    content_hash: str
    native: NativePooling | None = None
    #: sha256 of how the tokenizer turns text into ids (see :func:`tokenizer_fingerprint`).
    tokenizer_hash: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    #: "auto" when the compute dtype was chosen by ``dtype="auto"``: :func:`embedgeom.encode` then checks on a
    #: probe of the texts that the reduced precision is harmless for this model and falls back to float32 when
    #: it is not (recorded per call in ``Embeddings.meta["precision_check"]``); "fixed" when it was requested.
    dtype_policy: Literal["auto", "fixed"] = "fixed"

    def __post_init__(self) -> None:
        self._loaded_versions = _param_versions(self.model)
        self._memory_hash: tuple[tuple[int, ...], str] | None = None

    def __repr__(self) -> str:
        return (f"Encoder({self.spec!r}, kind={self.kind!r}, {type(self.model).__name__}, layers={self.num_layers}, "
                f"hidden={self.hidden_size}, device={self.device}, compute_dtype={_dtype_str(self.compute_dtype)} "
                f"({self.dtype_policy}), max_length={self.max_length}"
                f"{', native=' + repr(self.native.describe()) if self.native else ''})")

    def weights_hash(self) -> str:
        """The hash that identifies this encoder's weights in the embedding cache: ``content_hash`` (of the files it
        was loaded from) while the in-memory weights are unchanged; once any parameter or buffer has been modified
        in place (fine-tuning, ``load_state_dict``), a sha256 of the in-memory tensors instead."""
        now = _param_versions(self.model)
        if now == self._loaded_versions:
            return self.content_hash
        if self._memory_hash is None or self._memory_hash[0] != now:
            h = hashlib.sha256()
            for name, t in self.model.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._memory_hash = (now, "mem-" + h.hexdigest())
        return self._memory_hash[1]

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def card(self) -> dict[str, Any]:
        """JSON-able description recorded with every result."""
        return {
            "spec": self.spec,
            "path": str(self.path) if self.path else None,
            "kind": self.kind,
            "content_hash": self.content_hash,
            "tokenizer_hash": self.tokenizer_hash,
            "model_class": type(self.model).__name__,
            "model_type": self.model.config.model_type,
            "num_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "device": str(self.device),
            "compute_dtype": str(self.compute_dtype).replace("torch.", ""),
            "dtype_policy": self.dtype_policy,
            "max_length": self.max_length,
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "native_pooling": self.native.describe() if self.native else None,
            **self.info,
        }


def _dtype_str(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _param_versions(model: Any) -> tuple[int, ...]:
    """In-place modification counters of every parameter and buffer (cheap; no data is read)."""
    try:
        return tuple(t._version for t in (*model.parameters(), *model.buffers()))
    except (AttributeError, TypeError):
        return ()


# --- locating the checkpoint ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Located:
    model_dir: Path | str  # a directory, or a hub id
    kind: Literal["hf", "sentence-transformers", "trainer", "hub"]
    st_root: Path | None = None
    st_modules: tuple[dict, ...] = ()


def _resolve_trainer_run(path: Path) -> Path:
    try:
        run = json.loads((path / "run.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint: {path}/run.json is unreadable ({err}). Point at a checkpoint "
                              "directory inside the run instead.") from None
    latest = run.get("latest")
    if not latest:
        raise CheckpointError(f"checkpoint: the trainer run {path} has no finished checkpoint yet "
                              "(run.json has no 'latest'). Wait for the first checkpoint or resume the run.")
    target = (path / latest).resolve()
    if not (target / "config.json").is_file():
        raise CheckpointError(f"checkpoint: run.json in {path} points at {target}, which has no config.json.")
    return target


@dataclass(frozen=True)
class TrainerCheckpoint:
    """One checkpoint of a trainer run: its directory, step, tokens seen and the run's objective."""

    path: Path
    step: int
    tokens: int | None
    objective: str | None


def trainer_checkpoints(run_dir: str | os.PathLike, which: str | list[int] = "all") -> list[TrainerCheckpoint]:
    """The complete checkpoints of the trainer run ``run_dir``, oldest first, selected by ``which``: ``"all"``,
    ``"every:K"`` (every K-th, always with the last), ``"last"``, or steps as a list or a comma-separated string
    (``"500,1000"``). A checkpoint is complete when its ``trainer_state.json`` exists (the trainer renames a
    checkpoint into place only when it is whole)."""
    root = Path(run_dir).expanduser()
    if not (root / "run.json").is_file():
        raise CheckpointError(f"checkpoints: {root} is not a trainer run (no run.json). Point at the --out of "
                              "`embedgeom train`.")
    found = []
    for d in sorted((root / "checkpoints").glob("step-*")):
        try:
            state = json.loads((d / "trainer_state.json").read_text())
            cfg = json.loads((d / "trainer_config.json").read_text())
        except (OSError, ValueError):
            continue  # incomplete (being written, or damaged): not a checkpoint to analyse
        objective = (cfg.get("objective") or {}).get("name") if isinstance(cfg.get("objective"), dict) else None
        found.append(TrainerCheckpoint(d, int(state["step"]), state.get("tokens_seen"), objective))
    found.sort(key=lambda c: c.step)
    if not found:
        raise CheckpointError(f"checkpoints: the run {root} has no complete checkpoint yet. Wait for the first one.")
    steps = [c.step for c in found]
    if isinstance(which, str) and which in ("all", "last"):
        return found if which == "all" else found[-1:]
    if isinstance(which, str) and which.startswith("every:"):
        try:
            k = int(which.split(":", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise ValueError(f"checkpoints: expected every:K with an integer K >= 1, got {which!r}.")
        picked = found[::k]
        return picked if picked[-1] is found[-1] else [*picked, found[-1]]
    try:
        wanted = [int(v) for v in which.split(",")] if isinstance(which, str) else [int(v) for v in which]
    except (TypeError, ValueError):
        raise ValueError(f"checkpoints: expected all, last, every:K or a list of steps such as 500,1000, got "
                         f"{which!r}.") from None
    missing = [w for w in wanted if w not in steps]
    if missing:
        raise ValueError(f"checkpoints: steps {missing} are not among the run's checkpoints {steps}. Pick from "
                         "those, or use all / every:K.")
    return [c for c in found if c.step in wanted]


def _locate(spec: str) -> _Located:
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            raise CheckpointError(f"checkpoint: expected a model directory, got the file {path}. Pass the "
                                  "directory that holds config.json.")
        if (path / "run.json").is_file() and not (path / "config.json").is_file():
            return _Located(_resolve_trainer_run(path), "trainer")
        if (path / "modules.json").is_file():
            modules = tuple(json.loads((path / "modules.json").read_text()))
            tr = next((m for m in modules if m.get("type", "").endswith("models.Transformer")), None)
            if tr is None:
                raise CheckpointError(f"checkpoint: {path}/modules.json declares no Transformer module; only "
                                      "transformer-based sentence-transformers models are supported.")
            model_dir = path / tr.get("path", "")
            if not (model_dir / "config.json").is_file():
                raise CheckpointError(f"checkpoint: no config.json in {model_dir} (the Transformer module of "
                                      f"{path}/modules.json).")
            return _Located(model_dir, "sentence-transformers", path, modules)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"checkpoint: no config.json in {path} (looked for config.json, modules.json "
                                  "and run.json). Point at a Hugging Face model directory.")
        kind = "trainer" if (path / "trainer_config.json").is_file() else "hf"
        return _Located(path, kind)
    # hub ids are "name" or "org/name"; anything else that does not exist is a mistyped path
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec):
        raise CheckpointError(f"checkpoint: {spec} does not exist. Check the path.")
    return _Located(spec, "hub")


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    """Local directory of a hub id: the HF cache first, the network only if that fails and we are online."""
    from huggingface_hub import snapshot_download

    allow = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Dense/*", "modules.json"]
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=allow))
    except Exception:  # any cache miss falls through to the online attempt
        pass
    from .hub import hub_reachable

    if not hub_reachable():
        raise CheckpointError(f"checkpoint: {repo_id!r} is not a local directory, not in the local Hugging Face "
                              "cache, and the hub is not reachable (offline). Download it once online, or pass a "
                              "local directory.")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow))
    except Exception as err:  # network, auth or not-found: one clear message
        raise CheckpointError(f"checkpoint: {repo_id!r} is neither a local directory nor a hub model that could "
                              f"be fetched ({type(err).__name__}). Check the id, your network, or pass a local "
                              "directory.") from None


# --- native pooling -------------------------------------------------------------------------------------

_ST_MODES = (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
             ("pooling_mode_max_tokens", "max"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"))


def _read_native(root: Path, modules: tuple[dict, ...]) -> tuple[NativePooling | None, str | None]:
    """Parse Pooling / Dense / Normalize modules. Returns (native, reason-it-is-unavailable)."""
    modes: tuple[str, ...] = ()
    dense: list[DenseLayer] = []
    normalize = False
    include_prompt = True
    for m in modules:
        mtype = m.get("type", "").rsplit(".", 1)[-1]
        mdir = root / m.get("path", "")
        if mtype == "Transformer":
            continue
        if mtype == "Pooling":
            cfg = json.loads((mdir / "config.json").read_text())
            modes = tuple(name for key, name in _ST_MODES if cfg.get(key))
            other = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v
                     and k not in dict(_ST_MODES)]
            if other or not modes:
                return None, f"pooling mode {other or 'none'} is not supported"
            include_prompt = bool(cfg.get("include_prompt", True))
        elif mtype == "Dense":
            from safetensors.torch import load_file

            cfg = json.loads((mdir / "config.json").read_text())
            if not (mdir / "model.safetensors").is_file():
                return None, f"Dense module {mdir} has no model.safetensors (pickled weights are not loaded)"
            w = load_file(str(mdir / "model.safetensors"))
            act = cfg.get("activation_function", "torch.nn.modules.linear.Identity").rsplit(".", 1)[-1]
            if act not in ("Identity", "Tanh", "ReLU", "GELU"):
                return None, f"Dense activation {act} is not supported"
            dense.append(DenseLayer(w["linear.weight"], w.get("linear.bias"), act))
        elif mtype == "Normalize":
            normalize = True
        else:
            return None, f"module type {mtype} is not supported"
    if not modes:
        return None, "no Pooling module"
    return NativePooling(modes, tuple(dense), normalize, include_prompt), None


# --- hashing and loading --------------------------------------------------------------------------------

def content_hash(model_dir: Path) -> str:
    """sha256 over config.json and the weight files (name + bytes). The digest is memoised on disk under a key of
    each file's resolved path, inode, size, mtime and ctime: rewriting, replacing or copying over a file (even with
    its size and mtime preserved, as ``cp -p`` does) changes its ctime, so a stale digest is never reused (nor
    written inside a :func:`embedgeom.embedding_cache.cache_writes` block that turned writes off)."""
    from .embedding_cache import cache_writes_enabled
    from .storage import atomic_write_text, cache_root, file_digest

    files = [model_dir / "config.json", *[model_dir / f for f in _WEIGHT_FILES if (model_dir / f).is_file()]]
    files += sorted(p for p in model_dir.glob("model-*.safetensors"))
    stats = [(f, f.stat()) for f in files]
    stamp = json.dumps([(str(f.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for f, st in stats])
    key = hashlib.sha256(stamp.encode()).hexdigest()[:32]
    memo = cache_root() / "hashes" / f"v3-{key}.txt"
    with contextlib.suppress(OSError):
        return memo.read_text().strip()
    h = hashlib.sha256()
    for f in files:  # name and content digest of each file, in a fixed order
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    digest = h.hexdigest()
    if cache_writes_enabled():
        with contextlib.suppress(OSError):
            atomic_write_text(memo, digest)
    return digest


#: ``init_kwargs`` entries that name where a tokenizer was read from, not how it tokenises.
_TOKENIZER_PATH_KEYS = ("name_or_path", "vocab_file", "merges_file", "tokenizer_file", "special_tokens_map_file",
                        "added_tokens_file", "spm_file", "sp_model_file")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of how ``tokenizer`` turns text into ids: its class, its full serialisation (fast tokenizers: the
    vocabulary, normaliser, pre-tokeniser, model and post-processor) or its vocabulary (slow ones), its special and
    added tokens, and its init options (lower-casing, accent stripping, ...) other than file locations. Two
    checkpoints with the same weights and different tokenizers never share cached embeddings."""
    parts: list[Any] = [type(tokenizer).__name__]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        parts.append(backend.to_str())
    else:
        parts.append(sorted(tokenizer.get_vocab().items()))
    parts.append(sorted((str(k), str(v)) for k, v in getattr(tokenizer, "added_tokens_encoder", {}).items()))
    parts.append(str(getattr(tokenizer, "all_special_tokens", "")))
    init = {k: v for k, v in getattr(tokenizer, "init_kwargs", {}).items() if k not in _TOKENIZER_PATH_KEYS}
    parts.append(json.dumps(init, sort_keys=True, default=str))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def cpu_has_native_bf16() -> bool:
    """True when oneDNN reports native bfloat16 support on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 autocast on CUDA GPUs that support it (float16 otherwise) and on CPUs with native
    bfloat16 (AVX512-BF16/AMX); float32 elsewhere (other CPUs, MPS).

    Measured on MiniLM over 2,000 BBC sentences (CPU): bfloat16 autocast vectors have cosine >= 0.9999 to
    float32 ones and move uniformity / effective rank / IsoScore by about 0.1 of their jackknife standard
    error, at about twice the speed. That is not true of every model: in a strongly anisotropic encoder (all
    vectors a large shared component plus a small residual, as in briefly trained ones) bfloat16 rounding can
    exceed the residual the metrics measure, so with ``auto`` :func:`embedgeom.encode` verifies each call on a
    probe of the texts and recomputes in float32 when bfloat16 is not accurate enough (see
    ``embedgeom.encoding.PRECISION_TOLERANCE``). Pass ``dtype="float32"`` for float32 numbers without the check.
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype: expected one of {COMPUTE_DTYPES}, got {dtype!r}.")
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def _check_text_encoder(config: Any, where: str) -> None:
    mtype = getattr(config, "model_type", "?")
    if getattr(config, "is_encoder_decoder", False):
        raise CheckpointError(f"checkpoint: {where} is an encoder-decoder model ({mtype}); embedgeom analyses "
                              "encoder-only text models. Export its encoder as its own checkpoint first.")
    archs = " ".join(getattr(config, "architectures", None) or [])
    if mtype in _DECODER_ONLY or getattr(config, "is_decoder", False) or "CausalLM" in archs \
            or "LMHeadModel" in archs:
        raise CheckpointError(f"checkpoint: {where} is a decoder-only model ({mtype}); embedgeom pools "
                              "bidirectional encoders (no last-token pooling path). Use an encoder checkpoint.")
    if getattr(config, "vocab_size", None) is None or not hasattr(config, "num_hidden_layers"):
        raise CheckpointError(f"checkpoint: {where} ({mtype}) is not a text encoder (no vocabulary or layers).")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars and info logs during loading (the library never prints)."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def load_encoder(
    spec: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: ComputeDtype = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    max_length: int | None = None,
) -> Encoder:
    """Load a text encoder and its tokenizer from ``spec`` (see the module docstring for accepted specs).

    Weights are kept in float32; ``dtype`` is the autocast compute dtype used by :func:`embedgeom.encode`
    (``auto`` = bfloat16 where the hardware runs it natively, see :func:`resolve_compute_dtype`). The
    attention implementation is SDPA (eager where a model lacks SDPA). ``max_length`` defaults to the
    smallest of the tokenizer's limit, the position-embedding table, and a sentence-transformers
    ``max_seq_length``.
    """
    spec_s = os.fspath(spec)
    if not spec_s.strip():
        raise CheckpointError("checkpoint: expected a directory or hub id, got an empty string.")
    located = _locate(spec_s)
    dev = resolve_device(device)
    cdtype = resolve_compute_dtype(dtype, dev)
    local = _downloaded(located, revision)
    model_dir = Path(local.model_dir)
    config, tokenizer, model = _load_pretrained(model_dir, spec_s, trust_remote_code)
    model.eval().to(dev)
    from . import _capture

    attention_source = "sdpa-capture" if _capture.enable(model) else "eager-attentions"
    native, reason, sbert_max = _sentence_transformers_parts(local)
    default_max = _default_max_length(config, tokenizer, sbert_max, max_length)
    info: dict[str, Any] = {"attention_pooling_source": attention_source}
    if local.st_root is not None and native is None:
        info["native_unavailable"] = reason
    return Encoder(model=model, tokenizer=tokenizer, spec=spec_s, path=model_dir, kind=local.kind, device=dev,
                   compute_dtype=cdtype, max_length=default_max, content_hash=content_hash(model_dir),
                   native=native, info=info, dtype_policy="auto" if dtype == "auto" else "fixed",
                   tokenizer_hash=tokenizer_fingerprint(tokenizer))


def _downloaded(located: _Located, revision: str | None) -> _Located:
    """A hub id as its local snapshot (a sentence-transformers snapshot located inside; ``kind`` stays "hub");
    anything else as it is."""
    if located.kind != "hub":
        return located
    model_dir = _hub_snapshot(str(located.model_dir), revision)
    if (model_dir / "modules.json").is_file():
        sub = _locate(str(model_dir))
        return replace(located, model_dir=Path(sub.model_dir), st_root=sub.st_root, st_modules=sub.st_modules)
    return replace(located, model_dir=model_dir)


def _load_pretrained(model_dir: Path, spec: str, trust_remote_code: bool) -> tuple[Any, Any, Any]:
    """Config (checked to be a text encoder), tokenizer and float32 model from ``model_dir``, quietly; SDPA
    attention, eager where the model lacks SDPA."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    with _quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        except ValueError as err:
            raise CheckpointError(f"checkpoint: {model_dir}/config.json is not a model transformers knows "
                                  f"({str(err).splitlines()[0]}). Pass trust_remote_code=True only if you trust "
                                  "its code.") from None
        _check_text_encoder(config, spec)
        tok_dir = model_dir
        if not any((tok_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                                     "spiece.model", "sentencepiece.bpe.model")):
            raise CheckpointError(f"checkpoint: no tokenizer in {tok_dir} (looked for tokenizer.json, vocab.txt, "
                                  "tokenizer_config.json, *.model). Save the tokenizer beside the weights.")
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=trust_remote_code)
        has_st = (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file()
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch.float32}
        if has_st:
            kwargs["use_safetensors"] = True
        try:
            model = AutoModel.from_pretrained(model_dir, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError):
            model = AutoModel.from_pretrained(model_dir, attn_implementation="eager", **kwargs)
    return config, tokenizer, model


def _sentence_transformers_parts(located: _Located) -> tuple[NativePooling | None, str | None, Any]:
    """A sentence-transformers checkpoint's declared pooling (or why it cannot be used) and its
    ``max_seq_length``; (None, None, None) for other checkpoints."""
    if located.st_root is None:
        return None, None, None
    native, reason = _read_native(located.st_root, located.st_modules)
    sb = located.st_root / "sentence_bert_config.json"
    sbert_max = json.loads(sb.read_text()).get("max_seq_length") if sb.is_file() else None
    return native, reason, sbert_max


def _default_max_length(config: Any, tokenizer: Any, sbert_max: Any, max_length: int | None) -> int:
    """``max_length`` (checked, capped by the position-embedding table), else the smallest of the tokenizer's limit,
    the position-embedding table and a sentence-transformers ``max_seq_length``."""
    limits = [int(getattr(config, "max_position_embeddings", 512))]
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        limits.append(tml)
    if sbert_max:
        limits.append(int(sbert_max))
    default_max = min(limits)
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length: expected an integer >= 2, got {max_length!r}.")
        default_max = min(max_length, int(getattr(config, "max_position_embeddings", max_length)))
    return default_max
