"""Evaluation: ranking metrics with bootstrap intervals (`metrics`) and the cross-system comparison report (`report`).

The protocol (docs/evaluation.md): the same test cases, in the same order, for every system; Recall@k and NDCG@k with
percentile-bootstrap 95% intervals (Efron & Tibshirani, 1993), the same on the cold-start subset, catalogue coverage,
and paired-bootstrap significance tests between systems (Berg-Kirkpatrick et al., 2012).
"""
