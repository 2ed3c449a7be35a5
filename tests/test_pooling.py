"""Pooling functions against hand-written loops; mask handling, dtypes, no in-place writes."""

from __future__ import annotations

import pytest
import torch

from embedgeom import pooling as P
from embedgeom.pooling import attention_pool, cls_pool, first_token_attention, max_pool, mean_pool


def loop_mean(h, m):
    out = []
    for b in range(h.shape[0]):
        rows = [h[b, t].double() for t in range(h.shape[1]) if m[b, t]]
        out.append(torch.stack(rows).mean(0))
    return torch.stack(out)


def test_mean_and_max_match_loops():
    h = torch.randn(3, 5, 4)
    m = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(mean_pool(h, m).double(), loop_mean(h, m))
    want = torch.stack([torch.stack([h[b, t] for t in range(5) if m[b, t]]).amax(0) for b in range(3)])
    torch.testing.assert_close(max_pool(h, m), want)


def test_masked_positions_never_win_max_and_input_is_untouched():
    h = -torch.rand(2, 4, 3) - 1.0  # every real value is negative
    h[:, -1] = 100.0  # padding holds large values
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    before = h.clone()
    out = max_pool(h, m)
    assert (out < 0).all()
    assert torch.equal(h, before)
    mean_pool(h, m)
    assert torch.equal(h, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_hidden_states_pool_in_float32(dtype):
    h = (torch.randn(2, 6, 8) * 30).to(dtype)
    m = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    for f in (mean_pool, max_pool):
        out = f(h, m)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        torch.testing.assert_close(out, f(h.float(), m))


def test_cls_is_first_real_token_under_left_padding():
    h = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(cls_pool(h, right), h[:, 0])
    torch.testing.assert_close(cls_pool(h, left), torch.stack([h[0, 2], h[1, 0]]))


def test_attention_pool_renormalises_over_mask():
    h = torch.randn(1, 4, 3)
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    m = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    want = (0.1 * h[0, 0] + 0.2 * h[0, 1]) / 0.3
    torch.testing.assert_close(attention_pool(h, w, m)[0], want)


def test_first_token_attention_matches_full_softmax():
    b, heads, L, d = 2, 3, 5, 4
    q, k = torch.randn(b, heads, L, d), torch.randn(b, heads, L, d)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    four_d = mask[:, None, None, :].expand(b, 1, L, L)
    first = torch.tensor([0, 1])
    got = first_token_attention(q, k, four_d, first, 0.5)
    full = (q @ k.transpose(-1, -2)) * 0.5
    full = full.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
    want = torch.stack([full[0, :, 0].mean(0), full[1, :, 1].mean(0)])
    torch.testing.assert_close(got, want)
    additive = torch.zeros(b, 1, L, L).masked_fill(~four_d, float("-inf"))
    torch.testing.assert_close(first_token_attention(q, k, additive, first, 0.5), want)


def test_empty_rows_and_bad_shapes_are_errors():
    h = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="empty rows"):
        mean_pool(h, torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool))
    with pytest.raises(ValueError, match="hidden"):
        max_pool(torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        mean_pool(h, torch.ones(2, 4, dtype=torch.bool))


# --- the registry: each built-in pooler is its function on the right masks, with its declared metadata ---------


def test_builtin_poolers_are_registered_with_their_metadata():
    assert P.pooler_names() == ("mean", "cls", "max", "attention", "native", "last")
    assert P.pooler_names("encoder", include_native=False) == P.POOLINGS == ("mean", "cls", "max", "attention")
    assert P.ALL_POOLINGS == ("mean", "cls", "max", "attention", "native")
    assert P.pooler_names("decoder", include_native=False) == ("mean", "max", "last")
    assert P.pooler_names("decoder") == ("mean", "max", "native", "last")
    both, enc, dec = ("encoder", "decoder"), ("encoder",), ("decoder",)
    want = {"mean": ({"hidden"}, "any", both, 1), "cls": ({"hidden"}, "transformer", enc, 1),
            "max": ({"hidden"}, "any", both, 1), "attention": ({"hidden", "attention_row"}, "transformer", enc, 1),
            "native": ({"hidden", "native"}, "last", both, 2), "last": ({"hidden"}, "transformer", dec, 1)}
    for name, (needs, layers, kinds, version) in want.items():
        p = P.get_pooler(name)
        assert (p.name, p.kinds, set(p.needs), p.layers, p.version) == (name, kinds, needs, layers, version)
        assert p.definition and "\n" not in p.definition
        # version 1: the keys from before the registry; native is 2 (sentence-transformers' concatenation order)
        assert p.cache_fields() == ({} if version == 1 else {"pooler_version": version})
    assert P.get_pooler("native").declared and not P.get_pooler("mean").declared


def test_builtin_poolers_call_their_functions_on_the_right_masks():
    h = torch.randn(3, 5, 4)
    real = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)
    pool = real.clone()
    pool[:, -1] = False  # e.g. special tokens excluded
    pool[0, 2] = False
    w = torch.rand(3, 5)
    x = P.PoolInput(h, real, pool, attention_row=w)
    assert torch.equal(P.get_pooler("mean")(x), mean_pool(h, pool))
    assert torch.equal(P.get_pooler("max")(x), max_pool(h, pool))
    assert torch.equal(P.get_pooler("cls")(x), cls_pool(h, real))  # the first real token, whatever pool excludes
    assert torch.equal(P.get_pooler("attention")(x), attention_pool(h, w, pool))


def test_last_token_and_weighted_mean_on_hand_cases():
    h = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    assert P.last_pool(h, right).tolist() == [h[0, 2].tolist(), h[1, 3].tolist()]
    assert P.last_pool(h, left).tolist() == [h[0, 3].tolist(), h[1, 3].tolist()]
    x = P.PoolInput(h, left, left)
    assert torch.equal(P.get_pooler("last")(x), P.last_pool(h, left))
    # weights 1, 2, 3 over the real tokens whichever side the padding is on (sentence-transformers' weightedmean)
    w = torch.tensor([1.0, 2.0, 3.0])
    want = (w[:, None] * h[0, 1:4]).sum(0) / 6
    torch.testing.assert_close(P.weighted_mean_pool(h, left, left)[0], want)
    torch.testing.assert_close(P.weighted_mean_pool(h, right, right)[0], (w[:, None] * h[0, 0:3]).sum(0) / 6)
    with pytest.raises(ValueError, match="mask: expected at least one token per row"):
        P.last_pool(h, torch.zeros(2, 4, dtype=torch.bool))


def test_native_pooler_follows_the_declared_modules():
    from types import SimpleNamespace

    h = torch.randn(2, 4, 3)
    m = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    dense = SimpleNamespace(weight=torch.randn(5, 6), bias=torch.randn(5), activation="Tanh")
    native = SimpleNamespace(modes=("cls", "mean"), dense=(dense,), normalize=True)
    got = P.get_pooler("native")(P.PoolInput(h, m, m, native=native))
    v = torch.cat([cls_pool(h, m), mean_pool(h, m)], dim=1)
    want = torch.nn.functional.normalize(torch.tanh(v @ dense.weight.T + dense.bias), dim=1)
    torch.testing.assert_close(got, want)


def test_all_means_the_poolers_that_apply_and_need_no_declaration():
    assert P.resolve_poolings("all") == ("mean", "cls", "max", "attention")
    assert P.resolve_poolings("max, all") == ("max", "mean", "cls", "attention")
    assert P.resolve_poolings(("all", "native")) == ("mean", "cls", "max", "attention", "native")
    assert P.resolve_poolings("mine,mean", extra=("mine",)) == ("mine", "mean")
    with pytest.raises(ValueError, match=r"expected names from mean, cls, max, attention or 'all', got 'median'"):
        P.resolve_poolings("median", declared=False)
    with pytest.raises(ValueError, match="at least one"):
        P.resolve_poolings(())


def test_registration_is_checked_and_builtins_are_fixed():
    def f(x):
        return x.hidden[:, 0]

    with pytest.raises(ValueError, match="built-in"):
        P.register_pooler("mean", f, definition="d", replace=True)
    with pytest.raises(ValueError, match="built-in"):
        P.unregister_pooler("cls")
    for bad in ({"kinds": ("seq2seq",)}, {"needs": ("logits",)}, {"definition": "two\nlines"}, {"version": 0},
                {"layers": "first"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            P.register_pooler("tmp", f, **{"definition": "d", **bad})
    for name in ("all", "a,b", "x@1", "", " pad"):
        with pytest.raises(ValueError, match="name"):
            P.register_pooler(name, f, definition="d")
    with P.registered_pooler("tmp", f, definition="first position") as p:
        assert P.get_pooler("tmp") is p and "tmp" in P.POOLINGS
        with pytest.raises(ValueError, match="registered already"):
            P.register_pooler("tmp", f, definition="d")
        again = P.register_pooler("tmp", f, definition="d", version=2, replace=True)
        assert P.get_pooler("tmp") is again and again.cache_fields() == {"pooler_version": 2}
    assert "tmp" not in P.pooler_names()  # the block removes its name, replaced or not
    with P.registered_pooler("tmp", f, definition="d"):
        P.unregister_pooler("tmp")
        assert "tmp" not in P.pooler_names()
    with pytest.raises(ValueError, match="expected a registered pooler"):
        P.unregister_pooler("tmp")
