"""PLUM's collaborative indexer: co-occurrence mining, the objective, progressive masking, ID quality."""
import numpy as np
import pandas as pd
import torch

from sidrec.config import PlumConfig, RQVAEConfig
from sidrec.data.cooccur import mine_pairs, pair_quality, prefix_sharing, session_pairs
from sidrec.tokenizers.plum import PairIndex, PlumObjective, keep_levels, multi_positive_info_nce, plum_sids
from sidrec.tokenizers.rqvae import RQVAE, RQVAEArch, rqvae_sids


def _events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])


def test_session_pairs_respect_gap_window_and_users():
    ev = _events([(0, 1, 0, "train"), (0, 2, 10, "train"), (0, 3, 20, "train"), (0, 4, 5000, "train"),
                  (1, 4, 0, "train"), (1, 1, 1, "train")])
    pairs = session_pairs(ev, session_gap=100, window=1)
    assert list(map(tuple, pairs[["a", "b"]].to_numpy())) == [(1, 2), (1, 4), (2, 3)]  # 3-4 split by the gap
    wide = session_pairs(ev, session_gap=100, window=2)
    assert (1, 3) in set(map(tuple, wide[["a", "b"]].to_numpy()))
    assert session_pairs(ev, 100, 1)["count"].sum() == 3


def test_mining_uses_train_events_and_holds_out_unseen_valid_pairs():
    ev = _events([(0, 1, 0, "train"), (0, 2, 1, "train"), (0, 1, 50, "valid"), (0, 2, 51, "valid"),
                  (0, 3, 52, "valid"), (1, 5, 0, "test"), (1, 6, 1, "test")])
    pairs, m = mine_pairs(ev, session_gap=10, window=1, min_count=1)
    train = set(map(tuple, pairs.loc[pairs.split == "train", ["a", "b"]].to_numpy()))
    held = set(map(tuple, pairs.loc[pairs.split == "heldout", ["a", "b"]].to_numpy()))
    assert train == {(1, 2)} and held == {(2, 3)}  # (1, 2) is seen in train; test events never mined
    assert m["pairs_train"] == 1 and m["pairs_heldout"] == 1 and m["items_covered_train"] == 2


def test_prefix_sharing_hand_computed():
    codes = np.array([[0, 1], [0, 2], [1, 1], [0, 1]])
    pairs = pd.DataFrame({"a": [0, 0, 0], "b": [1, 2, 3], "split": "heldout"})
    assert prefix_sharing(codes, pairs, 1) == 2 / 3
    assert prefix_sharing(codes, pairs, 2) == 1 / 3
    q = pair_quality(codes, pairs, seed=0)
    assert q["heldout_pairs_share_l0"] == 2 / 3 and q["heldout_pairs_share_l0-1"] == 1 / 3
    assert 0 <= q["random_pairs_share_l0"] <= 1


def test_masking_only_drops_the_deepest_levels():
    gen = torch.Generator().manual_seed(0)
    keep = keep_levels(10000, 3, 0.4, gen)
    assert set(keep.tolist()) == {1, 2, 3}
    assert abs((keep < 3).float().mean().item() - 0.4) < 0.03
    assert (keep_levels(100, 3, 0.0, gen) == 3).all()
    model = RQVAE(RQVAEArch(8, (16,), 4, 3, 5))
    x = torch.randn(6, 8)
    keep = torch.tensor([3, 2, 1, 3, 1, 2])
    full = model(x)
    masked = model(x, keep=keep)
    assert torch.equal(masked["codes"], full["codes"])  # masking never changes the codes themselves
    books = model.codebooks.detach()
    for i, k in enumerate(keep.tolist()):  # z_q sums exactly the first `keep` codewords
        expect = sum(books[lv, full["codes"][i, lv]] for lv in range(k))
        assert torch.allclose(masked["z_q"][i], expect, atol=1e-6)


def test_lambda_zero_and_no_masking_is_exactly_the_rqvae_objective():
    torch.manual_seed(0)
    model = RQVAE(RQVAEArch(8, (16,), 4, 3, 5))
    x = torch.randn(12, 8)
    batch = {"x": x, "idx": torch.arange(12)}
    pairs = np.array([[0, 1], [2, 3]])
    obj = PlumObjective(model, pairs, 12, lam=0.0, temperature=0.5, mask_prob=0.0, seed=0)
    assert torch.equal(obj.loss(batch)["loss"], model.loss(batch)["loss"])
    obj_on = PlumObjective(model, pairs, 12, lam=1.0, temperature=0.5, mask_prob=0.0, seed=0)
    out = obj_on.loss(batch)
    assert out["contrastive"] > 0 and torch.allclose(out["loss"], model.loss(batch)["loss"] + out["contrastive"])


def test_pair_index_adjacency_is_symmetric_and_excludes_self():
    index = PairIndex(np.array([[0, 3], [1, 2], [2, 2], [3, 0]]), num_items=5)
    assert len(index) == 2  # (0, 3) once, the self pair dropped
    adj = index.adjacency(torch.tensor([3, 0, 4, 2, 1]))
    expect = torch.zeros(5, 5, dtype=torch.bool)
    expect[0, 1] = expect[1, 0] = True  # items 3 and 0
    expect[3, 4] = expect[4, 3] = True  # items 2 and 1
    assert torch.equal(adj, expect)


def test_multi_positive_info_nce_hand_computed_and_scale_free():
    z = torch.tensor([[0.0], [1.0], [3.0]])
    pos = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    # squared distances 1, 9, 4; their mean over i != j is 14/3; anchor 2 has no positive

    def logit(d2: float) -> float:
        return -d2 / (0.5 * 14 / 3)

    l0 = -(logit(1.0) - torch.logsumexp(torch.tensor([logit(1.0), logit(9.0)]), 0))
    l1 = -(logit(1.0) - torch.logsumexp(torch.tensor([logit(1.0), logit(4.0)]), 0))
    assert torch.allclose(multi_positive_info_nce(z, pos, 0.5), (l0 + l1) / 2)
    # two positives for one anchor: the mean of their -log p
    pos2 = torch.tensor([[False, True, True], [True, False, False], [True, False, False]])
    lp = torch.log_softmax(torch.tensor([logit(1.0), logit(9.0)]), 0)
    anchor0 = -lp.mean()
    assert torch.allclose(multi_positive_info_nce(z, pos2, 0.5),
                          (anchor0 + l1 + -torch.log_softmax(torch.tensor([logit(9.0), logit(4.0)]), 0)[0]) / 3)
    # rescaling the latent changes nothing, and the gradient has no component along the scale
    zz = torch.randn(16, 4, requires_grad=True)
    adj = torch.rand(16, 16) < 0.2
    adj = (adj | adj.T) & ~torch.eye(16, dtype=torch.bool)
    loss = multi_positive_info_nce(zz, adj, 0.5)
    assert torch.allclose(loss, multi_positive_info_nce(zz * 7.0, adj, 0.5), atol=1e-5)
    (grad,) = torch.autograd.grad(loss, zz)
    assert abs(float((grad * zz.detach()).sum())) < 1e-4 * float(grad.norm() * zz.detach().norm())
    assert multi_positive_info_nce(zz, torch.zeros(16, 16, dtype=torch.bool), 0.5) == 0


def _planted(seed=0, n_groups=8, per=6, dim=16):
    """Items whose content is random noise, but which co-occur in planted groups."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_groups * per, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    group = np.repeat(np.arange(n_groups), per)
    a, b = np.triu_indices(len(x), 1)
    same = group[a] == group[b]
    pairs = pd.DataFrame({"a": a[same], "b": b[same], "count": 1, "split": "train"})
    return x, group, pairs


def test_contrastive_loss_falls_and_pulls_planted_pairs_into_shared_level0_codes():
    x, group, pairs = _planted()
    # the last item of each group has no training pair: it must still get a (1-to-1) ID from its content
    cold = np.arange(5, len(x), 6)
    train = pairs[~pairs["a"].isin(cold) & ~pairs["b"].isin(cold)]
    rq = RQVAEConfig(num_levels=2, hidden_dims=(32,), latent_dim=8, epochs=150, batch_size=16, lr=3e-3,
                     dead_code_every=0)
    plum = PlumConfig(temperature=0.5, mask_prob=0.3)
    held = train.assign(split="heldout")
    base, _, _ = rqvae_sids(x, rq, 8, seed=0)
    table, model, _ = plum_sids(x, train, rq, plum, lam=1.0, codebook_size=8, seed=0)
    share_base = pair_quality(base.codes[:, :2], held, 0)["heldout_pairs_share_l0"]
    share_plum = pair_quality(table.codes[:, :2], held, 0)["heldout_pairs_share_l0"]
    # 8 codes: a random pair shares level 0 about 1/8 of the time; the planted pairs are noise to the content
    assert share_plum > share_base + 0.2 and share_plum > 0.35, (share_base, share_plum)
    assert len(np.unique(table.codes[:, 0])) >= 6  # not bought by collapsing level 0
    # the contrastive term itself falls during training
    xt = torch.from_numpy(x)
    idx = torch.arange(len(x))
    fresh = RQVAE(model.arch)
    obj_before = PlumObjective(fresh, train[["a", "b"]].to_numpy(), len(x), 1.0, 0.5, 0.0, 0)
    obj_after = PlumObjective(model, train[["a", "b"]].to_numpy(), len(x), 1.0, 0.5, 0.0, 0)
    with torch.no_grad():
        before = obj_before.contrastive(fresh.encoder(xt), idx)
        after = obj_after.contrastive(model.encoder(xt), idx)
    assert after < before - 0.3, (float(before), float(after))
    assert len(np.unique(table.codes, axis=0)) == len(x)  # every item, cold ones included, 1-to-1 after the suffix
