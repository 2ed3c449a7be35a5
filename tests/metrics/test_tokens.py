"""Token-level metrics against brute force over pairs, scikit-learn's PCA, the sentence-level metrics and closed
forms; their delete-a-group jackknife replicates against recomputation with each group left out."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.decomposition import PCA

from embedgeom import metrics as M
from embedgeom.metrics import tokens as T


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _occurrences(rng, n_ids=4, per_id=(6, 9, 5, 7), n_texts=6, d=8):
    """Token rows with ids and texts: each id spread over several texts, plus ids too rare to be eligible."""
    rows, ids, texts = [], [], []
    for i in range(n_ids):
        centre = rng.standard_normal(d) * 2
        for j in range(per_id[i]):
            rows.append(centre + rng.standard_normal(d))
            ids.append(100 + i)
            texts.append(j % n_texts)
    for j in range(4):  # an id with 4 occurrences (too few) and an id in one text only (too few texts)
        rows.append(rng.standard_normal(d))
        ids.append(7)
        texts.append(j)
    for _ in range(6):
        rows.append(rng.standard_normal(d))
        ids.append(8)
        texts.append(0)
    return np.array(rows), np.array(ids), np.array(texts)


def brute_self_similarity(x, ids, texts):
    vals = []
    for t in np.unique(ids):
        rows = x[ids == t]
        if len(rows) < 5 or len(np.unique(texts[ids == t])) < 2:
            continue
        vals.append(np.mean([_cos(rows[i], rows[j]) for i, j in itertools.combinations(range(len(rows)), 2)]))
    return float(np.mean(vals))


def brute_mev(x, ids, texts):
    vals = []
    for t in np.unique(ids):
        rows = x[ids == t]
        if len(rows) < 5 or len(np.unique(texts[ids == t])) < 2:
            continue
        vals.append(PCA(n_components=1).fit(rows).explained_variance_ratio_[0])
    return float(np.mean(vals))


def brute_intra(x, texts):
    vals = []
    for t in np.unique(texts):
        rows = x[texts == t]
        if len(rows) < 2:
            continue
        m = rows.mean(axis=0)
        vals.append(np.mean([_cos(r, m) for r in rows]))
    return float(np.mean(vals))


def test_self_similarity_and_mev_equal_brute_force(rng):
    x, ids, texts = _occurrences(rng)
    assert T.self_similarity(x, ids, texts) == pytest.approx(brute_self_similarity(x, ids, texts), abs=1e-12)
    assert T.mev(x, ids, texts) == pytest.approx(brute_mev(x, ids, texts), abs=1e-10)
    # eligibility: ids 7 (4 occurrences) and 8 (one text) are left out; lowering the bars takes them in
    assert T.eligible_ids(ids, texts).tolist() == [100, 101, 102, 103]
    assert 7 in T.eligible_ids(ids, texts, min_occurrences=4).tolist()
    assert 8 in T.eligible_ids(ids, texts, min_texts=1).tolist()


def test_mev_is_stable_under_a_large_shared_mean(rng):
    x, ids, texts = _occurrences(rng)
    shifted = x + 1e4  # a huge component shared by every occurrence (strongly anisotropic states)
    assert T.mev(shifted, ids, texts) == pytest.approx(brute_mev(x, ids, texts), abs=1e-8)


def test_intra_similarity_equals_brute_force(rng):
    x = rng.standard_normal((40, 6)) + 1.0
    texts = rng.integers(0, 7, size=40)
    texts[0] = 9  # a text of one token is left out
    assert T.intra_similarity(x, texts) == pytest.approx(brute_intra(x, texts), abs=1e-12)


def test_anisotropy_rogue_uniformity_rank_and_norms_against_references(rng):
    x = rng.standard_normal((30, 5)) + np.array([3.0, 0, 0, 0, 0])
    pairs = [(i, j) for i in range(30) for j in range(30) if i != j]
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert T.anisotropy(x) == pytest.approx(np.mean([z[i] @ z[j] for i, j in pairs]), abs=1e-12)
    assert T.anisotropy(x) == pytest.approx(float(M.mean_cosine(x)), abs=1e-10)
    rd = T.rogue_dimensions(x, top=2)
    cc = np.mean([z[i] * z[j] for i, j in pairs], axis=0)  # each dimension's part of the expected cosine
    np.testing.assert_allclose(rd.contributions, cc, atol=1e-12)
    assert rd.expected_cosine == pytest.approx(T.anisotropy(x), abs=1e-12)
    assert rd.shares.sum() == pytest.approx(1.0)
    assert rd.top[0] == 0  # the shifted dimension dominates the cosine
    assert rd.combined == pytest.approx(np.sort(cc)[::-1][:2].sum() / cc.sum())
    assert T.rogue_share(x, top=2) == pytest.approx(rd.combined)
    assert T.token_uniformity(x) == pytest.approx(float(M.uniformity(x)), abs=1e-10)
    assert T.token_effective_rank(x) == pytest.approx(M.effective_rank(x), rel=1e-9)
    norms = np.linalg.norm(x, axis=1)
    assert T.token_norm(x) == pytest.approx(norms.mean())
    assert T.token_norm_std(x) == pytest.approx(norms.std(ddof=0))


def test_uniformity_beyond_the_pair_limit_is_a_seeded_sample(rng):
    x = rng.standard_normal((300, 8))
    exact = float(M.uniformity(x))
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    r, method = T.uniformity_from_samples(z, np.zeros(300, dtype=np.int64), 1, pair_limit=20_000, seed=3)
    assert method.startswith("sampled: 20,000 seeded pairs of 44,850")
    k = np.exp(-2.0 * np.clip(2 - 2 * (z @ z.T)[np.triu_indices(300, 1)], 0, None))  # every pair's kernel
    se_log = k.std() / math.sqrt(20_000) / k.mean()  # Monte-Carlo error of the log-mean (delta method)
    assert abs(r.value - exact) < 4 * se_log
    r2, _ = T.uniformity_from_samples(z, np.zeros(300, dtype=np.int64), 1, pair_limit=20_000, seed=3)
    assert r2.value == r.value  # seeded
    r3, method3 = T.uniformity_from_samples(z, np.zeros(300, dtype=np.int64), 1)
    assert method3 == "exact over all 44,850 pairs" and r3.value == pytest.approx(exact, abs=1e-10)


def test_closed_forms():
    v = np.array([1.0, 2.0, -1.0, 0.5])
    # occurrences along one direction through a shared point: one principal component explains everything
    line = np.array([v * a + np.array([0, 0, 3.0, 0]) for a in np.linspace(-2, 2, 7)])
    ids, texts = np.full(7, 5), np.arange(7) % 3
    assert T.mev(line, ids, texts) == pytest.approx(1.0)
    # positive multiples of one vector: every pair has cosine 1
    same = np.array([v * a for a in (1, 2, 3, 4, 5, 6)])
    assert T.self_similarity(same, np.full(6, 1), np.arange(6)) == pytest.approx(1.0)
    # the 2d vertices of a cross-polytope: mean cosine over distinct pairs is -1 / (2d - 1)
    d = 5
    cross = np.vstack([np.eye(d), -np.eye(d)])
    assert T.anisotropy(cross) == pytest.approx(-1.0 / (2 * d - 1))
    # isotropic Gaussian: anisotropy near 0, effective rank near d
    g = np.random.default_rng(0).standard_normal((4000, 6))
    assert abs(T.anisotropy(g)) < 0.01
    assert T.token_effective_rank(g) > 5.9


def _groups(n, G, seed=0):
    group = np.empty(n, dtype=np.int64)
    for g, members in enumerate(M.jackknife.split_groups(n, G, seed)):
        group[members] = g
    return group


def test_replicates_equal_recomputation_with_each_group_left_out(rng):
    x, ids, texts = _occurrences(rng, per_id=(12, 15, 10, 14), n_texts=9)
    G = 3
    tgroup = _groups(9, G)
    occ_group = tgroup[texts]
    keep_ids = T.eligible_ids(ids, texts)
    rows = np.isin(ids, keep_ids)
    z = x[rows] / np.linalg.norm(x[rows], axis=1, keepdims=True)
    slot = np.searchsorted(keep_ids, ids[rows])
    sums = np.zeros((keep_ids.size, G, x.shape[1]))
    np.add.at(sums, (slot, occ_group[rows]), z)
    sq = np.zeros((keep_ids.size, G))
    np.add.at(sq, (slot, occ_group[rows]), (z * z).sum(1))
    counts = np.zeros((keep_ids.size, G))
    np.add.at(counts, (slot, occ_group[rows]), 1)
    ss = T.self_similarity_from_sums(sums, sq, counts)
    mv = T.mev_from_occurrences(x[rows], ids[rows], occ_group[rows], G)
    assert ss.value == pytest.approx(brute_self_similarity(x, ids, texts), abs=1e-12)
    for g in range(G):
        keep = occ_group != g
        # the ids stay those eligible on all texts (rule applied once), each with what is left of it
        sub_x, sub_ids = x[keep & rows], ids[keep & rows]
        want_ss = np.mean([np.mean([_cos(a, b) for a, b in itertools.combinations(sub_x[sub_ids == t], 2)])
                           for t in keep_ids if (sub_ids == t).sum() >= 2])
        want_mev = np.mean([PCA(n_components=1).fit(sub_x[sub_ids == t]).explained_variance_ratio_[0]
                            for t in keep_ids if (sub_ids == t).sum() >= 2])
        assert ss.replicates[g] == pytest.approx(want_ss, abs=1e-12)
        assert mv.replicates[g] == pytest.approx(want_mev, abs=1e-10)

    samples = rng.standard_normal((25, 7)) + 0.5
    sgroup = _groups(25, 4)
    zs = samples / np.linalg.norm(samples, axis=1, keepdims=True)
    an = T.anisotropy_from_samples(zs, sgroup, 4)
    un, _ = T.uniformity_from_samples(zs, sgroup, 4)
    er = T.effective_rank_from_samples(samples, sgroup, 4)
    _, rs = T.rogue_from_samples(zs, sgroup, 4, top=2)
    for g in range(4):
        kept = samples[sgroup != g]
        assert an.replicates[g] == pytest.approx(float(M.mean_cosine(kept)), abs=1e-10)
        assert un.replicates[g] == pytest.approx(float(M.uniformity(kept)), abs=1e-10)
        assert er.replicates[g] == pytest.approx(M.effective_rank(kept), rel=1e-9)
        assert rs.replicates[g] == pytest.approx(T.rogue_share(kept, top=2), abs=1e-10)

    values = rng.random(12)
    values[3] = np.nan  # a text of one token
    tg = _groups(12, 3)
    intra = T.intra_from_texts(values, tg, 3)
    assert intra.value == pytest.approx(np.nanmean(values))
    for g in range(3):
        assert intra.replicates[g] == pytest.approx(np.nanmean(values[tg != g]))
    # token norms: per text sum, squared deviations from the text's mean and count; a large common norm
    norms = [1e4 + 1e-3 * rng.standard_normal(int(k)) for k in rng.integers(1, 9, 12)]
    ns = np.array([v.sum() for v in norms])
    nm2 = np.array([((v - v.mean()) ** 2).sum() for v in norms])
    nc = np.array([v.size for v in norms])
    mean, std = T.norms_from_texts(ns, nm2, nc, tg, 3)
    every = np.concatenate(norms)
    assert mean.value == pytest.approx(every.mean(), rel=1e-12)
    assert std.value == pytest.approx(every.std(), rel=1e-6)
    kept = np.concatenate([v for v, g in zip(norms, tg, strict=True) if g != 1])
    assert mean.replicates[1] == pytest.approx(kept.mean(), rel=1e-12)
    assert std.replicates[1] == pytest.approx(kept.std(), rel=1e-6)


@pytest.mark.parametrize(("call", "match"), [
    (lambda x: T.self_similarity(x, np.arange(5), np.zeros(6, dtype=int)), r"^token_ids: expected a 1-D array of 6"),
    (lambda x: T.self_similarity(x, np.zeros(6), np.zeros(6, dtype=int)), r"^token_ids: expected integer labels"),
    (lambda x: T.mev(x, np.arange(6), np.arange(6)), r"^token_ids: expected at least one id with 5\+ occurrences"),
    (lambda x: T.intra_similarity(x, np.arange(6)), r"^texts: expected at least one text with 2 or more"),
    (lambda x: T.rogue_dimensions(x, top=9), r"^top: expected at most the dimension d = 3"),
    (lambda x: T.anisotropy(np.zeros((6, 3))), r"^x: expected rows with non-zero norm"),
    (lambda x: T.anisotropy(x[:, 0]), r"^x: expected a 2-D"),
])
def test_bad_input_is_one_clear_error(call, match):
    x = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.raises(ValueError, match=match):
        call(x)


def test_every_token_metric_is_registered_with_a_definition():
    assert set(T.TOKEN_METRICS) == {
        "intra_similarity", "self_similarity", "mev", "anisotropy", "adjusted_self_similarity",
        "adjusted_intra_similarity", "adjusted_mev", "token_norm", "token_norm_std", "rogue_share",
        "token_uniformity", "token_effective_rank"}
    for name, info in T.TOKEN_METRICS.items():
        assert info.name == name and info.description and info.reference
        assert info.function is None or len(info.function.__doc__) > 60
    assert not set(T.TOKEN_METRICS) & set(M.REGISTRY)  # token metrics never enter the sentence-level analysis
