"""Every encoder family: an architecture matrix of tiny random-weight models built from their configs (no downloads),
each saved with a tokenizer built here, loaded by embedgeom.load_encoder and encoded with every pooling that applies.

For each architecture: the family and pooling set are the documented ones; every pooling at a transformer layer and
the last layer, under right and left padding with many texts per batch, equals the same text's vector from a plain
Hugging Face forward of that text alone (mean / max / cls / last computed here from its hidden states) or, for
attention pooling, embedgeom's own single-text vector, to 1e-5; a pooling that does not apply is refused in one
line naming those that do. Decoder-only models: `last` equals sentence-transformers' Pooling("lasttoken") on the
same model, and a sentence-transformers checkpoint with last-token or weighted-mean pooling gives `native` vectors
equal to SentenceTransformer.encode.
"""

from __future__ import annotations

import pytest
import torch

import embedgeom as eg
from tests.fixtures import WORDS

TEXTS = ["the cat sat on the mat", "a dog", "hello world this is a long sentence with many words in it and more",
         "red"]
TOL = 1e-5

#: architecture -> (tokenizer style, family, poolings "all" means for it)
ENC = ("mean", "cls", "max", "attention")
DEC = ("mean", "max", "last")
ARCHS = {
    "bert": ("bert", "encoder-only", ENC), "roberta": ("bert", "encoder-only", ENC),
    "distilbert": ("bert", "encoder-only", ENC),
    "deberta-v2": ("bert", "encoder-only", ENC), "mpnet": ("mpnet", "encoder-only", ENC),
    "modernbert": ("bert", "encoder-only", ENC),
    "gpt2": ("gpt", "decoder-only", DEC), "llama": ("llama", "decoder-only", DEC),
    "qwen2": ("gpt", "decoder-only", DEC), "qwen3": ("gpt", "decoder-only", DEC),
    "gemma": ("llama", "decoder-only", DEC),
    "t5": ("t5", "encoder-decoder", ENC), "t5-encoder": ("t5", "encoder-decoder", ENC),
    "bart": ("bart", "encoder-decoder", ENC),
}
#: Encoders with learned absolute positions and no position_ids argument: left padding is refused for them.
NO_LEFT = {"bart"}


def make_tokenizer(style: str):
    """A WordPiece tokenizer over a small vocabulary, with the special-token template of the style's family:
    BERT ([CLS] a [SEP]), MPNet (<s> a </s>, pad id 1), GPT-2 (nothing added, no padding token), Llama (<s> a, no
    padding token), T5 (a </s>), BART (<s> a </s>)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    specials = {"bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "mpnet": ["<s>", "<pad>", "</s>", "<unk>"],
                "gpt": ["<unk>", "<s>", "</s>"], "llama": ["<unk>", "<s>", "</s>"], "t5": ["<pad>", "</s>", "<unk>"],
                "bart": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]}[style]
    vocab = list(dict.fromkeys([*specials, *WORDS, *chars, *[f"##{c}" for c in chars]]))
    ids = {w: i for i, w in enumerate(vocab)}
    unk = "[UNK]" if style == "bert" else "<unk>"
    tk = Tokenizer(models.WordPiece(ids, unk_token=unk))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def template(single: str, pair: str, toks: list[str]) -> None:
        tk.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                          special_tokens=[(t, ids[t]) for t in toks])

    if style == "bert":
        template("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", ["[CLS]", "[SEP]"])
        kw = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
              "mask_token": "[MASK]"}
    elif style == "mpnet":
        template("<s> $A </s>", "<s> $A </s> </s> $B </s>", ["<s>", "</s>"])
        kw = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    elif style == "gpt":
        kw = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    elif style == "llama":
        template("<s> $A", "<s> $A <s> $B", ["<s>"])
        kw = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    elif style == "t5":
        template("$A </s>", "$A </s> $B </s>", ["</s>"])
        kw = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        template("<s> $A </s>", "<s> $A </s> </s> $B </s>", ["<s>", "</s>"])
        kw = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>",
              "mask_token": "<mask>"}
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if style == "bert" else [])
    return PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=64, model_input_names=names, **kw)


def make_model(name: str, tok):
    import transformers as T

    V = len(tok.get_vocab()) + 8  # a margin: some tokenizer classes add a token of their own when reloaded
    pad = tok.pad_token_id
    enc = {"vocab_size": V, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 64, "max_position_embeddings": 72}
    dec = {**enc, "num_key_value_heads": 2, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    build = {
        "bert": lambda: T.BertModel(T.BertConfig(**enc)),
        "roberta": lambda: T.RobertaModel(T.RobertaConfig(**enc, pad_token_id=pad)),
        "distilbert": lambda: T.DistilBertModel(T.DistilBertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4,
                                                                   hidden_dim=64, pad_token_id=pad)),
        "deberta-v2": lambda: T.DebertaV2Model(T.DebertaV2Config(**enc, pad_token_id=pad)),
        "mpnet": lambda: T.MPNetModel(T.MPNetConfig(**enc, pad_token_id=pad)),
        "modernbert": lambda: T.ModernBertModel(T.ModernBertConfig(**enc, pad_token_id=pad, bos_token_id=None,
                                                                   eos_token_id=None, cls_token_id=None,
                                                                   sep_token_id=None, global_attn_every_n_layers=1)),
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=72,
                                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)),
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**dec)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**dec)),
        "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**dec, head_dim=8)),
        "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**dec, head_dim=8)),
        "t5": lambda: T.T5Model(_t5(T, V, tok)),
        "t5-encoder": lambda: T.T5EncoderModel(_t5(T, V, tok)),
        "bart": lambda: T.BartModel(T.BartConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2,
                                                 encoder_attention_heads=4, decoder_attention_heads=4,
                                                 encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=72,
                                                 pad_token_id=pad, bos_token_id=tok.bos_token_id,
                                                 eos_token_id=tok.eos_token_id,
                                                 decoder_start_token_id=tok.eos_token_id)),
    }
    torch.manual_seed(0)
    return build[name]()


def _t5(T, V, tok):
    return T.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id, relative_attention_num_buckets=8)


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """Every architecture of the matrix saved once (model + tokenizer) per test run."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for name, (style, _, _) in ARCHS.items():
        tok = make_tokenizer(style)
        model = make_model(name, tok)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


def _reference(enc, text: str) -> dict:
    """Every pooling of one text at every layer from a plain forward of that text alone (no padding, no embedgeom
    code path): (pooling, layer) -> vector."""
    ids = enc.tokenizer(text, add_special_tokens=True)["input_ids"]
    if enc.append_eos and ids[-1] != enc.tokenizer.eos_token_id:
        ids = [*ids, enc.tokenizer.eos_token_id]
    with torch.no_grad():
        out = enc.model(input_ids=torch.tensor([ids]), output_hidden_states=True, return_dict=True)
    refs = {}
    for lay, h in enumerate(out.hidden_states):
        h = h[0].to(torch.float32)
        refs.update({("mean", lay): h.mean(0), ("max", lay): h.max(0).values, ("cls", lay): h[0],
                     ("last", lay): h[-1]})
    return {k: v.numpy() for k, v in refs.items()}


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_pooling_agrees_with_a_single_text_forward(family_dirs, name):
    _, family, poolings = ARCHS[name]
    enc = eg.load_encoder(family_dirs[name], device="cpu", dtype="float32")
    assert (enc.family, enc.model_kind) == (family, "decoder" if family == "decoder-only" else "encoder")
    assert enc.card()["family"] == family
    L = enc.num_layers
    alone = eg.encode(enc, TEXTS, poolings="all", layers=(1, -1), batch_size=1)
    assert alone.poolings == poolings  # "all" is every pooling that applies to the family
    refs = [_reference(enc, t) for t in TEXTS]
    sides = ("right",) if name in NO_LEFT else ("right", "left")
    for side in sides:
        batched = eg.encode(enc, TEXTS, poolings="all", layers=(1, -1), batch_size=len(TEXTS), padding_side=side)
        for (p, lay), x in batched.vectors.items():
            assert lay in (1, L)
            for i in range(len(TEXTS)):
                want = alone.vectors[(p, lay)][i] if p == "attention" else refs[i][(p, lay)]
                assert abs(x[i] - want).max() < TOL, (name, side, p, lay, i)
    if name in NO_LEFT:
        with pytest.raises(ValueError, match=r"^padding_side: left padding needs position ids, which BartEncoder"):
            eg.encode(enc, TEXTS[:2], poolings="mean", padding_side="left")
    refused = "cls" if family == "decoder-only" else "last"
    with pytest.raises(ValueError) as err:
        eg.encode(enc, TEXTS[:2], poolings=("mean", refused))
    kind = enc.model_kind
    assert str(err.value) == (f"poolings: {refused!r} applies to {'encoder' if refused == 'cls' else 'decoder'} "
                              f"models, not to this {kind} model; poolings that apply: {', '.join(poolings)}.")


def test_decoder_padding_and_end_of_sequence(family_dirs):
    gpt = eg.load_encoder(family_dirs["gpt2"], device="cpu", dtype="float32")
    assert gpt.tokenizer.pad_token == "</s>" and gpt.card()["pad_token"].startswith("eos_token")
    assert gpt.append_eos  # GPT-2's tokenizer adds nothing: the end-of-sequence token is appended
    e = eg.encode(gpt, ["a dog"], poolings="last", layers=-1)
    ids = gpt.tokenizer("a dog")["input_ids"] + [gpt.tokenizer.eos_token_id]
    with torch.no_grad():
        h = gpt.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    assert abs(e.get("last")[0] - h.numpy()).max() < TOL
    assert e.meta["append_eos"] is True
    plain = eg.load_encoder(family_dirs["gpt2"], device="cpu", dtype="float32", append_eos=False)
    e2 = eg.encode(plain, ["a dog"], poolings="last", layers=-1)
    with torch.no_grad():
        h2 = plain.model(input_ids=torch.tensor([ids[:-1]])).last_hidden_state[0, -1]
    assert abs(e2.get("last")[0] - h2.numpy()).max() < TOL
    t5 = eg.load_encoder(family_dirs["t5"], device="cpu", dtype="float32")
    assert not t5.append_eos and type(t5.model).__name__ == "T5EncoderModel"
    assert eg.encode(t5, ["a dog"], poolings="mean", layers="all").layers == (0, 1, 2)  # 0 = embeddings


def _st_checkpoint(model_dir, out, mode):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    tr = Transformer(str(model_dir), max_seq_length=64)
    if tr.tokenizer.pad_token is None:
        tr.tokenizer.pad_token = tr.tokenizer.eos_token
    st = SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), pooling_mode=mode)], device="cpu")
    st.save(str(out))
    return st


@pytest.mark.parametrize(("name", "mode"), [("gpt2", "lasttoken"), ("qwen3", "lasttoken"), ("llama", "weightedmean")])
def test_native_last_token_and_weighted_mean_equal_sentence_transformers(family_dirs, tmp_path, name, mode):
    st = _st_checkpoint(family_dirs[name], tmp_path / "st", mode)
    want = st.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)
    enc = eg.load_encoder(tmp_path / "st", device="cpu", dtype="float32")
    assert not enc.append_eos  # a sentence-transformers checkpoint's tokenizer is used as it is
    for side in ("right", "left"):
        got = eg.encode(enc, TEXTS, poolings=("native", "last", "mean"), padding_side=side, batch_size=2)
        assert abs(got.get("native") - want).max() < TOL
        if mode == "lasttoken":  # embedgeom's `last` is sentence-transformers' last-token pooling
            assert abs(got.get("last") - want).max() < TOL
    mem = eg.encode(st, TEXTS, poolings="native")  # the same model in memory
    assert abs(mem.get("native") - want).max() < TOL
