"""Token streams for the LLM recommender: the bilingual CPT corpus and the SFT prompts (seeds/000 Steps 2.2-2.3)."""
