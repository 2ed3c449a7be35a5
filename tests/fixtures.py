"""Small real models built on the fly (no hub): a tiny BERT with its own WordPiece vocabulary."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("the a an and or of to in on at is was are were be been it this that with for as by from cat dog "
         "mat sat ran fast slow big small red blue green house tree car road city river sky sun moon star good "
         "bad happy sad film movie story plot actor music song game team win lose play work time day night "
         "year new old long short high low first last hello world sentence token text words more many much "
         "than one two three four five six seven eight nine ten").split()


def write_vocab(path: Path) -> Path:
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *chars, *[f"##{c}" for c in chars]]
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return path


def bert_tokenizer(vocab: Path, **kwargs):
    """A WordPiece BERT tokenizer over the vocabulary file ``vocab`` (transformers 5 takes ``vocab=``; 4.x's fast
    class takes ``vocab_file=`` - given the other keyword, each silently builds a 5-token vocabulary)."""
    import inspect

    import transformers

    cls = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer
    key = "vocab" if "vocab" in inspect.signature(cls.__init__).parameters else "vocab_file"
    tok = cls(**{key: str(vocab)}, **kwargs)
    assert len(tok.get_vocab()) > 5, "the tokenizer did not read its vocabulary"
    return tok


def make_tiny_bert(directory: Path, *, layers: int = 2, hidden: int = 32, heads: int = 4, seed: int = 0,
                   max_positions: int = 64) -> Path:
    """Save a randomly initialised (seeded) BertModel + BertTokenizerFast to ``directory``."""
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(directory / "vocab_src.txt")
    tok = bert_tokenizer(vocab, do_lower_case=True, model_max_length=max_positions)
    cfg = BertConfig(vocab_size=len(tok.get_vocab()), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=max_positions,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    model = BertModel(cfg)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    (directory / "vocab_src.txt").unlink()
    return directory
