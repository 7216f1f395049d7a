"""PLUM's collaborative indexer: co-occurrence mining, the objective, progressive masking, ID quality."""
import numpy as np
import pandas as pd
import torch

from sidrec.config import PlumConfig, RQVAEConfig
from sidrec.data.cooccur import mine_pairs, pair_quality, prefix_sharing, session_pairs
from sidrec.tokenizers.plum import PlumObjective, info_nce, keep_levels, plum_sids
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
    obj = PlumObjective(model, x, np.array([[0, 1], [2, 3]]), np.array([1, 1]), lam=0.0, temperature=0.1,
                        mask_prob=0.0, pair_batch=2, seed=0)
    assert torch.equal(obj.loss({"x": x})["loss"], model.loss({"x": x})["loss"])
    obj_on = PlumObjective(model, x, np.array([[0, 1], [2, 3]]), np.array([1, 1]), lam=1.0, temperature=0.1,
                           mask_prob=0.0, pair_batch=2, seed=0)
    assert obj_on.loss({"x": x})["loss"] > model.loss({"x": x})["loss"]


def test_info_nce_prefers_matching_rows():
    a = torch.eye(4)
    assert info_nce(a, a, 0.1) < info_nce(a, a.roll(1, 0), 0.1)


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
    rq = RQVAEConfig(num_levels=2, hidden_dims=(32,), latent_dim=8, epochs=150, batch_size=8, lr=3e-3,
                     dead_code_every=0)
    plum = PlumConfig(temperature=0.1, mask_prob=0.3, pair_batch=64)
    held = pairs.assign(split="heldout")
    base, _, _ = rqvae_sids(x, rq, 8, seed=0)
    table, model, m = plum_sids(x, pairs, rq, plum, lam=1.0, codebook_size=8, seed=0)
    share_base = pair_quality(base.codes[:, :2], held, 0)["heldout_pairs_share_l0"]
    share_plum = pair_quality(table.codes[:, :2], held, 0)["heldout_pairs_share_l0"]
    assert share_plum > share_base + 0.2 and share_plum > 0.6
    # the contrastive term itself falls during training
    xt = torch.from_numpy(x)
    fresh = RQVAE(model.arch)
    obj_before = PlumObjective(fresh, xt, pairs[["a", "b"]].to_numpy(), pairs["count"].to_numpy(), 1.0, 0.1, 0.0, 64, 0)
    obj_after = PlumObjective(model, xt, pairs[["a", "b"]].to_numpy(), pairs["count"].to_numpy(), 1.0, 0.1, 0.0, 64, 0)
    with torch.no_grad():
        assert obj_after.contrastive() < obj_before.contrastive()
    assert len(np.unique(table.codes, axis=0)) == len(x)  # still 1-to-1 after the suffix
