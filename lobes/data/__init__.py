"""Data: audio reading (``audio``), manifests and the preparation skeleton (``manifests``),
SpeechBrain datasets and loaders (``datasets``), the corpus registry (``corpora``)."""
