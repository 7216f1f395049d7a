"""Token streams for the LLM recommender: the bilingual CPT corpus and the SFT prompts (docs/systems.md, PLUM)."""
