"""Item text and the frozen content encoder."""
