"""Networks and recommenders: the from-scratch GPT, popularity, and (later) the LLM and the LAMIA palette."""
