"""Vectors -> codes: RQ-VAE, PLUM, LAMIA, atomic; suffix and tables in sids.py. Never imports models/."""
