"""Tokenizers: train a BERT WordPiece tokenizer on the corpus (offline default) or load any HF tokenizer.

The trained tokenizer is BERT's: BertNormalizer (lower-casing when ``lowercase``, accent stripping with it,
Chinese-character splitting), BertPreTokenizer (whitespace + punctuation), WordPiece with ``##`` continuation,
special tokens ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``, and the ``[CLS] text [SEP]`` template. It is
saved as a ``transformers`` BERT tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ``vocab.txt``,
``special_tokens_map.json`` where the installed version writes it), so ``AutoTokenizer.from_pretrained`` loads
it from every checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TrainerError, fail

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class SpecialIds:
    """Ids the trainer needs from a tokenizer."""

    pad: int
    cls: int
    sep: int
    mask: int
    #: Every special id (never selected for masking, never used as a random replacement).
    all: tuple[int, ...]
    vocab_size: int


def _bert_tokenizer_class() -> Any:
    import transformers

    # transformers 4.x: BertTokenizerFast; 5.x: BertTokenizer is the tokenizers-backed class.
    return getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer


def train_wordpiece(texts: Iterable[str], *, vocab_size: int, lowercase: bool, model_max_length: int) -> Any:
    """Train a BERT WordPiece tokenizer on ``texts`` and wrap it as a ``transformers`` tokenizer.

    ``vocab_size`` is an upper bound (a small corpus yields fewer pieces); min_frequency 2; 1000-character
    alphabet limit; deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 32:
        raise fail("data.vocab_size", "an integer >= 64", repr(vocab_size), "Use e.g. 8192.")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                        limit_alphabet=1000, continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(_nonempty(texts), trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise fail("corpus", "text to train a tokenizer on", "no words", "Check the corpus files are not empty.")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    cls = _bert_tokenizer_class()
    return cls(tokenizer_object=tok, do_lower_case=lowercase, unk_token="[UNK]", sep_token="[SEP]",
               pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]", model_max_length=model_max_length)


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if t and not t.isspace():
            yield t


def load_tokenizer(spec: str | Path) -> Any:
    """``AutoTokenizer.from_pretrained(spec)`` (a local directory, or a hub id when online); must be a fast
    (Rust) tokenizer with pad, cls, sep and mask tokens."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(spec))
    except (OSError, ValueError) as err:
        raise fail("data.tokenizer", "'wordpiece' or a local tokenizer directory / reachable hub id", repr(str(spec)),
                   f"It could not be loaded ({str(err).splitlines()[0][:200]}); use data.tokenizer=wordpiece "
                   "offline.") from None
    special_ids(tok)
    return tok


def special_ids(tok: Any) -> SpecialIds:
    """The ids of [PAD]/[CLS]/[SEP]/[MASK] (or the tokenizer's equivalents); TrainerError if one is missing."""
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise fail("data.tokenizer", "a fast (Rust-backed) tokenizer", type(tok).__name__,
                   "Use a tokenizer with a tokenizer.json, or data.tokenizer=wordpiece.")
    ids = {}
    for role in ("pad", "cls", "sep", "mask"):
        value = getattr(tok, f"{role}_token_id", None)
        if value is None:
            raise fail("data.tokenizer", "a tokenizer with pad, cls, sep and mask tokens", f"no {role} token",
                       "Use a BERT-style tokenizer, or data.tokenizer=wordpiece.")
        ids[role] = int(value)
    vocab = len(tok)
    return SpecialIds(**ids, all=tuple(sorted({int(i) for i in tok.all_special_ids})), vocab_size=vocab)


def tokenizer_digest(tok: Any) -> str:
    """sha256 of the tokenizer's full serialisation (vocabulary, normaliser, pre-tokeniser)."""
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()


def encoder_for(tok: Any) -> Any:
    """A copy of the Rust tokenizer with truncation and padding off, for bulk ``encode_batch``."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def save_tokenizer(tok: Any, path: Path) -> None:
    """``save_pretrained`` plus a ``vocab.txt`` (one token per line, by id) for WordPiece vocabularies."""
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(path))
    vocab_file = path / "vocab.txt"
    if not vocab_file.exists():
        model = json.loads(tok.backend_tokenizer.to_str()).get("model", {})
        if model.get("type") == "WordPiece":
            vocab = model["vocab"]
            by_id = sorted(vocab.items(), key=lambda kv: kv[1])
            if [i for _, i in by_id] != list(range(len(by_id))):
                raise TrainerError("tokenizer: its WordPiece ids are not contiguous; cannot write vocab.txt.")
            vocab_file.write_text("".join(f"{t}\n" for t, _ in by_id), encoding="utf-8")
