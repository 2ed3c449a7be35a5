"""Checkpoint -> model + tokenizer. The only module that knows checkpoint formats.

Accepted specs:

* a local Hugging Face model directory (``config.json`` + weights + tokenizer);
* a sentence-transformers directory (``modules.json``): its declared pooling (``1_Pooling``), Dense layers
  and ``Normalize`` module become the ``native`` pooling; its ``max_seq_length`` is the default max length;
* a run directory or checkpoint written by :mod:`trainer` (``run.json`` -> its latest checkpoint);
* a hub id (``org/name``): loaded from the local Hugging Face cache, or downloaded when online;
* a model in memory: a ``sentence_transformers.SentenceTransformer``, or a ``(transformers.PreTrainedModel,
  tokenizer)`` pair (the one in-memory form :func:`load_encoder`, :func:`embedgeom.encode` and
  :func:`embedgeom.analyze` take). Its cache identity is a sha256 of its config, weights (the state dict) and
  tokenizer - never an object id - recomputed whenever a weight changes.

Model families (``Encoder.family``; the poolings that apply follow ``Encoder.model_kind``):

* **encoder-only** (BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, DeBERTa-v2, MPNet, ModernBERT, ...): bidirectional,
  ``model_kind="encoder"``;
* **decoder-only** (GPT-2, Llama, Mistral, Qwen2/3, Gemma, Phi, ... - any causal model ``AutoModel`` builds without
  remote code): ``model_kind="decoder"``. A tokenizer without a padding token pads with its end-of-sequence token
  (recorded in the card; padded positions are masked, so the choice changes no vector). For a plain Hugging Face
  checkpoint the end-of-sequence token is appended to every text when the tokenizer does not already end its
  encodings with it (the last-token recipe of e5-mistral, gte-Qwen2, LLM2Vec; ``append_eos`` overrides it); a
  sentence-transformers checkpoint's tokenizer is used as it is, as sentence-transformers does;
* **encoder-decoder** (T5, mT5, UMT5, BART, mBART, Pegasus, Marian, ...; also a ``T5EncoderModel`` checkpoint): the
  encoder stack alone is analysed (``model_kind="encoder"``); layer 0 is its embedding output and layer
  ``num_layers`` its last block's output (after T5's final layer norm).

Safety: safetensors weights are preferred; ``.bin`` files are read by transformers' ``weights_only``
unpickler, which refuses arbitrary objects; ``trust_remote_code`` is False unless the caller passes True.
Non-text checkpoints and models that need remote code (unless ``trust_remote_code=True``) are refused with a
clear error.

Integrity: nothing is lost and nothing is invented. A checkpoint is analysed only when every weight of the model its
``config.json`` describes was read from its files (no random initialisation; see :func:`_check_loading_report` for
the one head that may be absent and the extra keys that may be present), the weights agree with the config in shape,
hold only finite values, the tokenizer has a real vocabulary whose ids all fit the embedding matrix, and every file
read (safetensors headers, ``modules.json``, the pooling config, a trainer ``run.json``) parses. Anything else is a
:class:`CheckpointError` of one line that names the file (or tensor) and says how to fix it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import re
import struct
import warnings
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
                 "codegen", "starcoder2", "stablelm", "qwen2_moe", "qwen3_moe", "gemma3_text", "cohere", "granite"}
#: Model families and the poolings' model kind each maps to (see the module docstring).
FAMILIES: dict[str, str] = {"encoder-only": "encoder", "decoder-only": "decoder", "encoder-decoder": "encoder"}
#: Encoder-decoder types whose encoder stack has its own class (loads a full checkpoint or an encoder-only one).
_ENCODER_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


class CheckpointError(ValueError):
    """A checkpoint could not be found, is incomplete or inconsistent, or is not a supported text encoder. The
    message is one line: ``checkpoint: <file> <what is wrong>. Fix: <what to do>``."""


def _first_line(err: BaseException) -> str:
    """An exception as one short line (its first non-empty line, without terminal escapes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(err).__name__}: {line[:200]}" if line else type(err).__name__


def _read_json(path: Path, what: str, fix: str, expect: type = dict) -> Any:
    """The JSON document at ``path`` (a ``dict`` or ``list`` as ``expect`` says), or a :class:`CheckpointError`
    naming the file: missing, unreadable, not JSON, or JSON of the wrong shape. ``what`` says what the file is,
    ``fix`` how to repair it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint: {path} is missing ({what}). Fix: {fix}") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint: {path} could not be read ({what}; {_first_line(err)}). "
                              f"Fix: {fix}") from None
    except ValueError as err:  # UnicodeDecodeError
        raise CheckpointError(f"checkpoint: {path} is not valid JSON ({what}; {_first_line(err)}). "
                              f"Fix: {fix}") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise CheckpointError(f"checkpoint: {path} is not valid JSON ({what}; {_first_line(err)}). "
                              f"Fix: {fix}") from None
    if not isinstance(data, expect):
        kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
                 float: "a number", type(None): "null"}
        raise CheckpointError(f"checkpoint: {path} holds {kinds.get(type(data), type(data).__name__)}, expected a "
                              f"JSON {'object' if expect is dict else 'array'} ({what}). Fix: {fix}")
    return data


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
    #: "encoder-only", "decoder-only" or "encoder-decoder" (its encoder stack is :attr:`model`).
    family: str = "encoder-only"
    #: Whether the tokenizer's end-of-sequence token is appended to every text (decoder-only models; see the module
    #: docstring).
    append_eos: bool = False
    #: A sentence-transformers checkpoint's named prompts (``config_sentence_transformers.json``) and the one it
    #: applies by default (None: none).
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @property
    def model_kind(self) -> str:
        """The kind of model the poolers must apply to: ``"decoder"`` (causal) or ``"encoder"`` (bidirectional,
        including an encoder-decoder's encoder stack)."""
        return FAMILIES.get(self.family, "encoder")

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
        was loaded from, or of the in-memory model it was built from) while the in-memory weights are unchanged;
        once any parameter or buffer has been modified in place or replaced (fine-tuning, ``load_state_dict``), a
        sha256 of the in-memory tensors instead."""
        now = _param_versions(self.model)
        if now == self._loaded_versions:
            return self.content_hash
        if self._memory_hash is None or self._memory_hash[0] != now:
            self._memory_hash = (now, "mem-" + state_dict_hash(self.model))
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
            "family": self.family,
            "model_kind": self.model_kind,
            "append_eos": self.append_eos,
            **self.info,
        }


def _dtype_str(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _param_versions(model: Any) -> tuple[int, ...]:
    """In-place modification counters and storage addresses of every parameter and buffer (cheap; no data is
    read): a step of an optimiser bumps a counter, ``param.data = other`` changes an address."""
    try:
        return tuple(v for t in (*model.parameters(), *model.buffers()) for v in (t._version, t.data_ptr()))
    except (AttributeError, TypeError):
        return ()


def state_dict_hash(model: Any, *extra: str) -> str:
    """sha256 over ``model``'s state dict (every name, dtype, shape and the tensor bytes) and ``extra`` strings."""
    h = hashlib.sha256()
    for e in extra:
        h.update(e.encode())
        h.update(b"\x00")
    for name, t in model.state_dict().items():
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --- locating the checkpoint ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Located:
    model_dir: Path | str  # a directory, or a hub id
    kind: Literal["hf", "sentence-transformers", "trainer", "hub"]
    st_root: Path | None = None
    st_modules: tuple[dict, ...] = ()


def _resolve_trainer_run(path: Path) -> Path:
    fix_json = ("restore the run's run.json, or point at a checkpoint directory inside the run (checkpoints/step-*) "
                "instead.")
    run = _read_json(path / "run.json", "the trainer run's record", fix_json)
    latest = run.get("latest")
    if not latest:
        raise CheckpointError(f"checkpoint: the trainer run {path} has no finished checkpoint yet "
                              "(run.json has no 'latest'). Wait for the first checkpoint or resume the run.")
    if not isinstance(latest, str):
        raise CheckpointError(f"checkpoint: {path / 'run.json'} names its latest checkpoint as {latest!r}, expected "
                              f"a relative path such as 'checkpoints/step-0000100'. Fix: {fix_json}")
    target = (path / latest).resolve()
    if not (target / "config.json").is_file():
        raise CheckpointError(f"checkpoint: run.json in {path} points at {target}, which has no config.json. "
                              f"Fix: {fix_json}")
    return target


class CheckpointSkippedWarning(UserWarning):
    """A trainer checkpoint left out of a trajectory because it is damaged or incomplete."""


@dataclass(frozen=True)
class TrainerCheckpoint:
    """One checkpoint of a trainer run: its directory, step, tokens seen and the run's objective."""

    path: Path
    step: int
    tokens: int | None
    objective: str | None


def trainer_checkpoints(run_dir: str | os.PathLike, which: str | list[int] = "all") -> list[TrainerCheckpoint]:
    """The intact checkpoints of the trainer run ``run_dir``, oldest first, selected by ``which``: ``"all"``,
    ``"every:K"`` (every K-th, always with the last), ``"last"``, or steps as a list or a comma-separated string
    (``"500,1000"``). The run directory is read by the trainer's own reader (:func:`trainer.checkpoint.
    run_checkpoints`): a checkpoint whose files do not match its manifest, or whose state records another step, is
    left out with a :class:`CheckpointSkippedWarning` naming its step and files."""
    from trainer.checkpoint import run_checkpoints
    from trainer.errors import TrainerError

    root = Path(run_dir).expanduser()
    try:
        records, skipped = run_checkpoints(root)
    except TrainerError as err:
        raise CheckpointError(f"checkpoints: {root} is not a readable trainer run ({err})") from None
    for line in skipped:
        warnings.warn(f"checkpoints: {root}: left out {line}", CheckpointSkippedWarning, stacklevel=2)
    found = [TrainerCheckpoint(r.path, r.step, r.tokens, r.objective) for r in records]
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


def _check_link(spec: str, path: Path) -> None:
    """A path that ``exists()`` reports missing but that is there as a name: a symbolic-link loop or a dangling
    link, said as such (never mistaken for a hub id)."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CheckpointError(f"checkpoint: {spec} is a symbolic-link loop (following it leads back to "
                                  "itself). Fix: point the link at the model directory, or pass the directory "
                                  "itself.") from None
        if os.path.islink(path):
            raise CheckpointError(f"checkpoint: {spec} is a symbolic link to {os.readlink(path)}, which does not "
                                  "exist. Fix: point the link at the model directory, or pass the directory "
                                  "itself.") from None


def _st_modules(path: Path) -> tuple[dict, ...]:
    """The module list of a sentence-transformers ``modules.json``, checked to be a list of objects with a type."""
    fix = ("restore modules.json from the model's source (a JSON list of {idx, name, path, type} objects), or point "
           "at the Transformer module's directory.")
    modules = _read_json(path / "modules.json", "the sentence-transformers module list", fix, expect=list)
    for m in modules:
        if not isinstance(m, dict) or not isinstance(m.get("type", ""), str) \
                or not isinstance(m.get("path", ""), str):
            raise CheckpointError(f"checkpoint: {path / 'modules.json'} has the entry {str(m)[:80]!r}, expected an "
                                  f"object with a string type and path. Fix: {fix}")
    return tuple(modules)


def _locate(spec: str) -> _Located:
    path = Path(spec).expanduser()
    _check_link(spec, path)
    if path.exists():
        if path.is_file():
            raise CheckpointError(f"checkpoint: expected a model directory, got the file {path}. Pass the "
                                  "directory that holds config.json.")
        if (path / "run.json").is_file() and not (path / "config.json").is_file():
            return _Located(_resolve_trainer_run(path), "trainer")
        if (path / "modules.json").is_file():
            modules = _st_modules(path)
            tr = next((m for m in modules if m.get("type", "").rsplit(".", 1)[-1] == "Transformer"), None)
            if tr is None:
                raise CheckpointError(f"checkpoint: {path}/modules.json declares no Transformer module; only "
                                      "transformer-based sentence-transformers models are supported.")
            model_dir = path / tr.get("path", "")
            if not (model_dir / "config.json").is_file():
                raise CheckpointError(f"checkpoint: no config.json in {model_dir} (the Transformer module of "
                                      f"{path}/modules.json). Fix: restore the module's files, or correct its path "
                                      "in modules.json.")
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

#: sentence-transformers' legacy Pooling keys and our mode names, in the order sentence-transformers concatenates
#: the modes (its ``pooling_mode`` key, from version 6, lists them itself).
_ST_MODES = (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
             ("pooling_mode_mean_tokens", "mean"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
             ("pooling_mode_weightedmean_tokens", "weightedmean"), ("pooling_mode_lasttoken", "lasttoken"))
#: sentence-transformers' ``pooling_mode`` values -> our mode names.
_ST_MODE_NAMES = {"cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len",
                  "weightedmean": "weightedmean", "lasttoken": "lasttoken"}


def _pooling_modes(cfg: dict) -> tuple[tuple[str, ...], str | None]:
    """The modes a Pooling config declares (legacy ``pooling_mode_*`` flags or the ``pooling_mode`` key), and a
    reason when one is not supported."""
    declared = cfg.get("pooling_mode")
    if declared is not None:
        names = (declared,) if isinstance(declared, str) else tuple(declared) if isinstance(declared, list) else ()
        unknown = [m for m in names if m not in _ST_MODE_NAMES]
        if unknown or not names:
            return (), f"pooling mode {unknown or declared!r} is not supported"
        return tuple(_ST_MODE_NAMES[m] for m in names), None
    modes = tuple(name for key, name in _ST_MODES if cfg.get(key))
    other = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in dict(_ST_MODES)]
    if other or not modes:
        return (), f"pooling mode {other or 'none'} is not supported"
    return modes, None


def _read_native(root: Path, modules: tuple[dict, ...]) -> tuple[NativePooling | None, str | None]:
    """Parse Pooling / Dense / Normalize modules. Returns (native, reason-it-is-unavailable) when a module is of a
    kind embedgeom does not support; raises :class:`CheckpointError` naming the file when one is damaged (a
    malformed config, unreadable or incomplete Dense weights)."""
    modes: tuple[str, ...] = ()
    dense: list[DenseLayer] = []
    normalize = False
    include_prompt = True
    fix = "restore the module's files from the model's source (or re-save the model with sentence-transformers)."
    for m in modules:
        mtype = m.get("type", "").rsplit(".", 1)[-1]
        mdir = root / m.get("path", "")
        if mtype == "Transformer":
            continue
        if mtype == "Pooling":
            cfg = _read_json(mdir / "config.json", "the sentence-transformers Pooling config", fix)
            modes, why = _pooling_modes(cfg)
            if why:
                return None, why
            include_prompt = bool(cfg.get("include_prompt", True))
        elif mtype == "Dense":
            cfg = _read_json(mdir / "config.json", "the sentence-transformers Dense config", fix)
            if not (mdir / "model.safetensors").is_file():
                return None, f"Dense module {mdir} has no model.safetensors (pickled weights are not loaded)"
            act = cfg.get("activation_function", "torch.nn.modules.linear.Identity")
            act = act.rsplit(".", 1)[-1] if isinstance(act, str) else repr(act)
            if act not in ("Identity", "Tanh", "ReLU", "GELU"):
                return None, f"Dense activation {act} is not supported"
            w = _load_safetensors(mdir / "model.safetensors")
            if not isinstance(w.get("linear.weight"), torch.Tensor) or w["linear.weight"].ndim != 2:
                raise CheckpointError(f"checkpoint: {mdir / 'model.safetensors'} has no 2-d linear.weight (the "
                                      f"Dense module's weights). Fix: {fix}")
            _check_finite(w.items(), mdir / "model.safetensors")
            dense.append(DenseLayer(w["linear.weight"], w.get("linear.bias"), act))
        elif mtype == "Normalize":
            normalize = True
        else:
            return None, f"module type {mtype} is not supported"
    if not modes:
        return None, "no Pooling module"
    return NativePooling(modes, tuple(dense), normalize, include_prompt), None


# --- file integrity -------------------------------------------------------------------------------------

_FIX_DAMAGED = "re-download or re-save the checkpoint (save_pretrained writes safetensors)."
#: bytes per element of each safetensors dtype (the header's tensor sizes are checked against the file's length).
_ST_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                   "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _check_safetensors(path: Path) -> None:
    """Read only the header of the safetensors file ``path`` and check that it parses and that the tensor data it
    describes fills the file exactly (a truncated or overwritten file is caught before any tensor is read)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            raw = fh.read(n) if 2 <= n <= min(size - 8, 100 << 20) else None
    except OSError as err:
        raise CheckpointError(f"checkpoint: {path} could not be read ({_first_line(err)}). "
                              f"Fix: {_FIX_DAMAGED}") from None
    if raw is None:
        raise CheckpointError(f"checkpoint: {path} is damaged (its safetensors header is unreadable: the file has "
                              f"{size} bytes, the header length field says {max(n, 0)}). Fix: {_FIX_DAMAGED}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as err:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"checkpoint: {path} is damaged (its safetensors header is not valid JSON: "
                              f"{_first_line(err)}). Fix: {_FIX_DAMAGED}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint: {path} is damaged (its safetensors header is not a JSON object). "
                              f"Fix: {_FIX_DAMAGED}")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(v) for v in entry["data_offsets"])
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            width = _ST_DTYPE_BYTES.get(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"checkpoint: {path} is damaged (the header entry of {name} is malformed). "
                                  f"Fix: {_FIX_DAMAGED}") from None
        if begin < 0 or stop < begin or (width is not None and stop - begin != count * width):
            raise CheckpointError(f"checkpoint: {path} is damaged (the header gives {name} a data range that does "
                                  f"not match its shape). Fix: {_FIX_DAMAGED}")
        end = max(end, stop)
    if 8 + n + end != size:
        raise CheckpointError(f"checkpoint: {path} is damaged (its header describes {8 + n + end} bytes, the file "
                              f"has {size}: truncated or overwritten). Fix: {_FIX_DAMAGED}")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of the safetensors file ``path`` (header checked first), any failure naming the file."""
    from safetensors.torch import load_file

    _check_safetensors(path)
    try:
        return load_file(str(path))
    except Exception as err:  # the reader's own error (e.g. an unknown dtype): one line naming the file
        raise CheckpointError(f"checkpoint: {path} could not be read ({_first_line(err)}). "
                              f"Fix: {_FIX_DAMAGED}") from None


def _check_finite(named: Any, where: Path | str) -> None:
    """Refuse NaN or inf in any floating-point tensor of ``named`` ((name, tensor) pairs), naming the first one (one
    ``isfinite(...).all()`` per tensor: cheap beside loading)."""
    bad = []
    for name, t in named:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append((name, t))
    if bad:
        name, t = bad[0]
        n_bad = int((~torch.isfinite(t)).sum())
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise CheckpointError(f"checkpoint: {where} holds non-finite values (NaN or inf) in the tensor {name}: "
                              f"{n_bad} of {t.numel()} elements{more}. Fix: the checkpoint is damaged or its "
                              "training diverged; use an earlier checkpoint or re-save it from a healthy run.")


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


def model_family(config: Any, where: str) -> str:
    """The family of the text model ``config`` describes: ``"encoder-only"``, ``"decoder-only"`` (causal) or
    ``"encoder-decoder"``; a config without a vocabulary or layers is a :class:`CheckpointError`."""
    mtype = getattr(config, "model_type", "?")
    if getattr(config, "vocab_size", None) is None or not hasattr(config, "num_hidden_layers"):
        raise CheckpointError(f"checkpoint: {where} ({mtype}) is not a text model (no vocabulary or layers).")
    if getattr(config, "is_encoder_decoder", False) or mtype in _ENCODER_CLASSES:  # T5EncoderModel: T5's encoder
        return "encoder-decoder"
    archs = " ".join(getattr(config, "architectures", None) or [])
    if mtype in _DECODER_ONLY or getattr(config, "is_decoder", False) or "CausalLM" in archs \
            or "LMHeadModel" in archs:
        return "decoder-only"
    return "encoder-only"


def _encoder_stack(model: Any, family: str) -> Any:
    """The module embedgeom runs: an encoder-decoder's encoder stack (``get_encoder()``), a task model's base model
    (``GPT2LMHeadModel`` -> ``GPT2Model``), otherwise the model itself."""
    if family == "encoder-decoder" and type(model).__name__ not in _ENCODER_CLASSES.values():
        return model.get_encoder()
    base = getattr(model, "base_model", model)
    return base if base is not None else model


def _pad_token(tokenizer: Any, where: str) -> str | None:
    """Give a tokenizer without a padding token one (its end-of-sequence, else unknown, else beginning token;
    padded positions are masked, so which changes no vector). Returns what was chosen, None if it had one."""
    if tokenizer.pad_token is not None:
        return None
    for name in ("eos_token", "unk_token", "bos_token"):
        tok = getattr(tokenizer, name, None)
        if tok is not None:
            tokenizer.pad_token = tok
            return f"{name} ({tok!r}; the tokenizer has no padding token)"
    raise CheckpointError(f"checkpoint: the tokenizer of {where} has no padding, end-of-sequence, unknown or "
                          "beginning token to pad batches with. Fix: set tokenizer.pad_token and save it again.")


def _wants_eos(tokenizer: Any, family: str, st_checkpoint: bool, append_eos: bool | None) -> bool:
    """Whether to append the end-of-sequence token to every text (see the module docstring)."""
    if append_eos is not None:
        if not isinstance(append_eos, bool):
            raise ValueError(f"append_eos: expected True, False or None (automatic), got {append_eos!r}.")
        if append_eos and tokenizer.eos_token_id is None:
            raise ValueError("append_eos: the tokenizer has no end-of-sequence token to append. Pass "
                             "append_eos=None or False.")
        return append_eos
    if family != "decoder-only" or st_checkpoint or tokenizer.eos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return not ids or ids[-1] != tokenizer.eos_token_id


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
    spec: str | os.PathLike | Any,
    *,
    device: str | torch.device = "auto",
    dtype: ComputeDtype = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    max_length: int | None = None,
    append_eos: bool | None = None,
) -> Encoder:
    """Load a text model and its tokenizer from ``spec`` (see the module docstring for accepted specs and model
    families): a path or hub id, or a model in memory - a ``SentenceTransformer`` or a ``(PreTrainedModel,
    tokenizer)`` pair.

    Weights are kept in float32 (a model in memory keeps its own dtype and, with ``device="auto"``, its own device;
    it is put in eval mode); ``dtype`` is the autocast compute dtype used by :func:`embedgeom.encode` (``auto`` =
    bfloat16 where the hardware runs it natively, see :func:`resolve_compute_dtype`). The attention implementation
    is SDPA (eager where a model lacks SDPA). ``max_length`` defaults to the smallest of the tokenizer's limit, the
    position-embedding table, and a sentence-transformers ``max_seq_length``. ``append_eos``: append the
    tokenizer's end-of-sequence token to every text (None: automatic, see the module docstring).
    """
    if is_in_memory(spec):
        from .in_memory import in_memory_encoder

        return in_memory_encoder(spec, device=device, dtype=dtype, max_length=max_length, append_eos=append_eos)
    if not isinstance(spec, (str, os.PathLike)):
        raise CheckpointError(f"checkpoint: expected a directory, a hub id, a SentenceTransformer or a "
                              f"(PreTrainedModel, tokenizer) pair, got {_describe(spec)}.")
    spec_s = os.fspath(spec)
    if not spec_s.strip():
        raise CheckpointError("checkpoint: expected a directory or hub id, got an empty string.")
    located = _locate(spec_s)
    dev = resolve_device(device)
    cdtype = resolve_compute_dtype(dtype, dev)
    local = _downloaded(located, revision)
    model_dir = Path(local.model_dir)
    native, reason, sbert_max = _sentence_transformers_parts(local)  # cheap: its damage is found before the model
    config, tokenizer, model, absent = _load_pretrained(model_dir, spec_s, trust_remote_code)
    family = model_family(config, spec_s)
    model.eval().to(dev)
    from . import _capture

    attention_source = "sdpa-capture" if _capture.enable(model) else "eager-attentions"
    default_max = _default_max_length(config, tokenizer, sbert_max, max_length)
    info: dict[str, Any] = {"attention_pooling_source": attention_source}
    pad = _pad_token(tokenizer, spec_s)
    if pad:
        info["pad_token"] = pad
    if absent:
        info["absent_weights"] = absent
    if local.st_root is not None and native is None:
        info["native_unavailable"] = reason
    prompts, default_prompt = _st_prompts(local.st_root)
    return Encoder(model=model, tokenizer=tokenizer, spec=spec_s, path=model_dir, kind=local.kind, device=dev,
                   compute_dtype=cdtype, max_length=default_max, content_hash=content_hash(model_dir),
                   native=native, info=info, dtype_policy="auto" if dtype == "auto" else "fixed",
                   tokenizer_hash=tokenizer_fingerprint(tokenizer), family=family,
                   append_eos=_wants_eos(tokenizer, family, local.st_root is not None, append_eos),
                   prompts=prompts, default_prompt_name=default_prompt)


def is_in_memory(spec: Any) -> bool:
    """Whether ``spec`` is a model in memory: a ``SentenceTransformer`` or a ``(model, tokenizer)`` pair."""
    if isinstance(spec, tuple):
        return len(spec) == 2 and isinstance(spec[0], torch.nn.Module)
    return isinstance(spec, torch.nn.Module)


def _describe(obj: Any) -> str:
    if isinstance(obj, tuple):
        return f"a tuple of {len(obj)} ({', '.join(type(o).__name__ for o in obj[:3])})"
    return type(obj).__name__


def _st_prompts(st_root: Path | None) -> tuple[dict[str, str], str | None]:
    """A sentence-transformers checkpoint's named prompts and default prompt name
    (``config_sentence_transformers.json``); none for other checkpoints."""
    if st_root is None or not (st_root / "config_sentence_transformers.json").is_file():
        return {}, None
    cfg = _read_json(st_root / "config_sentence_transformers.json", "the sentence-transformers settings",
                     "restore it from the model's source, or delete it (no prompts are then known).")
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in prompts.items()):
        raise CheckpointError(f"checkpoint: {st_root / 'config_sentence_transformers.json'} has prompts that are not "
                              "a mapping of names to texts. Fix: restore it from the model's source.")
    default = cfg.get("default_prompt_name")
    return dict(prompts), default if isinstance(default, str) and default in prompts else None


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


#: Files that hold a tokenizer's vocabulary (``tokenizer_config.json`` alone is not one: given only that,
#: transformers builds a tokenizer of the special tokens alone, which maps every word to the unknown token).
_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                "tokenizer.model")
#: Buffers older transformers versions saved with the weights; the model rebuilds them, so a stored copy is harmless.
_HARMLESS_BUFFERS = ("position_ids", "token_type_ids")
#: The one module of a base model that may be absent from a checkpoint: the sentence-level pooling head
#: (``pooler.dense``), which masked-LM-only pre-training never trains and embedgeom never reads.
_OPTIONAL_MODULE = "pooler"


def _weight_files(model_dir: Path) -> tuple[str, list[Path]]:
    """The weights transformers will read from ``model_dir``: (the name to cite, the files), safetensors first; every
    safetensors header checked, a sharded index parsed and its shards present."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (model_dir / single).is_file():
            files = [model_dir / single]
        elif (model_dir / index_name).is_file():
            index = model_dir / index_name
            fix = "re-download the checkpoint with all its shards and the index that lists them."
            weight_map = _read_json(index, "the index of the weight shards", fix).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"checkpoint: {index} has no weight_map (the index of the weight shards). "
                                      f"Fix: {fix}")
            files = [model_dir / str(f) for f in sorted(set(weight_map.values()))]
            for f in files:
                if not f.is_file():
                    raise CheckpointError(f"checkpoint: {index} lists the shard {f.name}, which is missing from "
                                          f"{model_dir}. Fix: {fix}")
        else:
            continue
        for f in files:
            if f.suffix == ".safetensors":
                _check_safetensors(f)
        return str(files[0] if len(files) == 1 else model_dir / index_name), files
    raise CheckpointError(f"checkpoint: no weights in {model_dir} (looked for {', '.join(_WEIGHT_FILES)}). Fix: save "
                          "the model beside its config.json (model.save_pretrained(dir)).")


def _load_tokenizer(tok_dir: Path, trust_remote_code: bool) -> Any:
    """The tokenizer saved in ``tok_dir``, refused when it has no vocabulary file or transformers fell back to a
    degenerate one (nothing but special tokens)."""
    from transformers import AutoTokenizer

    fix = "save the model's full tokenizer beside the weights (tokenizer.save_pretrained(dir))."
    vocab_files = [f for f in _VOCAB_FILES if (tok_dir / f).is_file()] + sorted(p.name for p in tok_dir.glob("*.model"))
    if not vocab_files:
        found = " (only tokenizer_config.json, which holds no vocabulary)" \
            if (tok_dir / "tokenizer_config.json").is_file() else ""
        raise CheckpointError(f"checkpoint: no tokenizer in {tok_dir}{found}: looked for {', '.join(_VOCAB_FILES)}, "
                              f"*.model. Fix: {fix}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=trust_remote_code)
    except Exception as err:  # a malformed tokenizer file: one line naming the directory and its vocabulary file
        raise CheckpointError(f"checkpoint: the tokenizer in {tok_dir} ({vocab_files[0]}) could not be loaded "
                              f"({_first_line(err)}). Fix: {fix}") from None
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    vocab = tokenizer.get_vocab()
    if not any(t not in special for t in vocab):
        raise CheckpointError(f"checkpoint: the tokenizer in {tok_dir} has no vocabulary beyond its {len(vocab)} "
                              f"special tokens (transformers fell back to an empty {type(tokenizer).__name__}; every "
                              f"word would become the unknown token). Fix: {fix}")
    return tokenizer


def _tokenizer_file(tok_dir: Path) -> str:
    return next((f for f in _VOCAB_FILES if (tok_dir / f).is_file()), "tokenizer")


def _summarise_keys(keys: Any, limit: int = 3) -> str:
    """Weight names grouped by their numbered block (``encoder.layer.1.*: 16 tensors``), at most ``limit`` groups."""
    groups: dict[str, int] = {}
    for key in sorted(keys):
        parts = key.split(".")
        cut = next((i for i, p in enumerate(parts) if p.isdigit()), None)
        group = ".".join(parts[:cut + 1]) + ".*" if cut is not None and cut < len(parts) - 1 else key
        groups[group] = groups.get(group, 0) + 1
    shown = [g if n == 1 and not g.endswith("*") else f"{g} ({n} tensors)" for g, n in list(groups.items())[:limit]]
    more = f" and {len(groups) - limit} more" if len(groups) > limit else ""
    return ", ".join(shown) + more


def _shape(s: Any) -> str:
    return "x".join(str(d) for d in s) if isinstance(s, (tuple, list, torch.Size)) else str(s)


def _check_loading_report(model: Any, info: dict[str, Any], where: str, config_file: Path) -> list[str]:
    """Refuse a model that transformers could not fill entirely from the checkpoint's files.

    The rule (``info`` is transformers' loading report; key names are taken without the base model's prefix, e.g.
    ``bert.``):

    * **missing** keys (weights the config's model has and the files lack, which transformers would initialise at
      random) are refused, except the whole of the base model's ``pooler`` (the next-sentence pooling head, absent
      from checkpoints pre-trained with masked-LM only; embedgeom never reads it). Its parameters are then set to
      zero so that nothing random is left in the model, and the absence is recorded in the encoder's card.
    * **unexpected** keys (weights the files hold and the model has no place for) are harmless when they belong to
      a module the base model does not have (a task head: ``cls.*`` of BertForMaskedLM/BertForPreTraining,
      ``lm_head.*``, ``classifier.*``, ELECTRA's ``discriminator_predictions.*``, ...) or are a buffer older
      transformers saved (``*.position_ids``, ``*.token_type_ids``). An unexpected key inside one of the model's own
      modules (e.g. ``encoder.layer.6.*`` when config.json declares 6 layers) means config and weights disagree:
      refused.
    * **mismatched** keys (shape differs between files and config) and any loader error are refused.

    Returns the absent optional modules (for the card)."""
    prefix = getattr(model, "base_model_prefix", "") or ""

    def strip(key: str) -> str:
        return key[len(prefix) + 1:] if prefix and key.startswith(prefix + ".") else key

    fix_config = "use the config.json the weights were saved with."
    errors = [str(e) for e in info.get("error_msgs") or []]
    if errors:
        raise CheckpointError(f"checkpoint: {where} could not be loaded into the model {config_file} describes "
                              f"({errors[0].splitlines()[0][:200]}). Fix: {fix_config}")
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: str(m[0]) if isinstance(m, tuple) else str(m))
    if mismatched:
        first = mismatched[0]
        name, stored, wanted = (first if isinstance(first, tuple) and len(first) == 3 else (str(first), "?", "?"))
        hint = ""
        if strip(str(name)).endswith("word_embeddings.weight") and isinstance(stored, (tuple, list, torch.Size)):
            hint = (f"; config.json says vocab_size={getattr(model.config, 'vocab_size', '?')}, the weights have "
                    f"{stored[0]} rows")
        more = f" (and {len(mismatched) - 1} more tensors)" if len(mismatched) > 1 else ""
        raise CheckpointError(f"checkpoint: {where} does not match {config_file}: {strip(str(name))} is "
                              f"{_shape(stored)} in the weights and {_shape(wanted)} in the config{hint}{more}. "
                              f"Fix: {fix_config}")
    missing = sorted(strip(k) for k in info.get("missing_keys") or [])
    own = {name for name, _ in model.named_children()}
    optional = {n for n, _ in model.named_parameters() if n.split(".")[0] == _OPTIONAL_MODULE}
    absent: list[str] = []
    if optional and optional <= set(missing):
        missing = [k for k in missing if k not in optional]
        absent.append(_OPTIONAL_MODULE)
    if missing:
        raise CheckpointError(f"checkpoint: {where} lacks {len(missing)} weights of the model {config_file} "
                              f"describes ({_summarise_keys(missing)}); they would be initialised at random. Fix: "
                              "use the complete checkpoint (every weight file, or re-save it with save_pretrained), "
                              f"or {fix_config}")
    unexpected = sorted(k for k in (strip(k) for k in info.get("unexpected_keys") or [])
                        if k.split(".")[0] in own and k.split(".")[-1] not in _HARMLESS_BUFFERS)
    if unexpected:
        layers = [int(m.group(1)) for k in unexpected if (m := re.search(r"(?:^|\.)layers?\.(\d+)\.", k))]
        hint = ""
        if layers and hasattr(model.config, "num_hidden_layers"):
            hint = (f"; the weights hold at least {max(layers) + 1} layers, config.json says num_hidden_layers="
                    f"{model.config.num_hidden_layers}")
        raise CheckpointError(f"checkpoint: {where} holds {len(unexpected)} weights that have no place in the model "
                              f"{config_file} describes ({_summarise_keys(unexpected)}{hint}). Fix: {fix_config}")
    if absent:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.split(".")[0] == _OPTIONAL_MODULE:
                    p.zero_()
    return absent


def _check_vocab_fits(tokenizer: Any, model: Any, tok_dir: Path, where: str) -> None:
    """Every id the tokenizer can produce must index a row of the input embedding matrix."""
    emb = model.get_input_embeddings()
    rows = getattr(emb, "num_embeddings", None)
    if rows is None:
        return
    top = max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)
    if top > rows:
        raise CheckpointError(f"checkpoint: the tokenizer in {tok_dir} ({_tokenizer_file(tok_dir)}) has {top} token "
                              f"ids but the model's embedding matrix in {where} has {rows} rows (ids from {rows} on "
                              "would fail with 'index out of range'). Fix: use the tokenizer the model was trained "
                              "with, or resize the model's embeddings to the tokenizer and save both again.")


def _load_pretrained(model_dir: Path, spec: str, trust_remote_code: bool) -> tuple[Any, Any, Any, list[str]]:
    """Config (checked to be a text model), tokenizer and float32 model from ``model_dir``, quietly; SDPA
    attention, eager where the model lacks SDPA. Every check of the module docstring's *Integrity* paragraph is
    made here; the last element is the list of absent optional modules (see :func:`_check_loading_report`). The
    model returned is what embedgeom runs: an encoder-decoder's encoder stack, a causal LM's base model."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel

    config_file = model_dir / "config.json"
    _read_json(config_file, "the model config", "restore the checkpoint's config.json (model.config.save_pretrained).")
    with _quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        except ValueError as err:
            raise CheckpointError(f"checkpoint: {model_dir}/config.json is not a model transformers knows "
                                  f"({str(err).splitlines()[0]}). Pass trust_remote_code=True only if you trust "
                                  "its code.") from None
        family = model_family(config, spec)
        where, files = _weight_files(model_dir)
        tokenizer = _load_tokenizer(model_dir, trust_remote_code)
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch.float32,
                                  "output_loading_info": True, "ignore_mismatched_sizes": True}
        if files[0].suffix == ".safetensors":
            kwargs["use_safetensors"] = True
        loader: Any = AutoModel
        if family == "encoder-decoder" and config.model_type in _ENCODER_CLASSES:
            import transformers

            loader = getattr(transformers, _ENCODER_CLASSES[config.model_type])
        try:
            try:
                model, report = loader.from_pretrained(model_dir, attn_implementation="sdpa", **kwargs)
            except (ValueError, ImportError):
                model, report = loader.from_pretrained(model_dir, attn_implementation="eager", **kwargs)
        except pickle.UnpicklingError:
            raise CheckpointError(f"checkpoint: {where} cannot be loaded safely (torch's weights-only reader "
                                  "refused it: the pickle holds objects other than tensors, or is damaged; embedgeom "
                                  "never unpickles anything else). Fix: convert it to safetensors where you trust its "
                                  "source, or use the model's safetensors release.") from None
        except CheckpointError:
            raise
        except (OSError, RuntimeError, EOFError, SafetensorError) as err:
            raise CheckpointError(f"checkpoint: the weights in {where} could not be read ({_first_line(err)}). "
                                  f"Fix: {_FIX_DAMAGED}") from None
    absent = _check_loading_report(model, report, where, config_file)
    _check_vocab_fits(tokenizer, model, model_dir, where)
    _check_finite(model.named_parameters(), where)
    return config, tokenizer, _encoder_stack(model, family), absent


def _sentence_transformers_parts(located: _Located) -> tuple[NativePooling | None, str | None, Any]:
    """A sentence-transformers checkpoint's declared pooling (or why it cannot be used) and its
    ``max_seq_length``; (None, None, None) for other checkpoints."""
    if located.st_root is None:
        return None, None, None
    native, reason = _read_native(located.st_root, located.st_modules)
    sb = located.st_root / "sentence_bert_config.json"
    sbert_max = _read_json(sb, "the sentence-transformers settings", "restore it from the model's source, or delete "
                           "it to use the tokenizer's maximum length.").get("max_seq_length") if sb.is_file() else None
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
