"""Raw loaders, the canonical schema, splits and sequence windows."""
