"""The model lobes: the SSL encoder (``encoder``), masked pooling, the heads, frame arithmetic."""
