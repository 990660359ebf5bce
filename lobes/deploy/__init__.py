"""Deployment: ``gmptl-export`` (``export``), ``EmotionRecognizer`` (``inference``) and
``gmptl-classify`` (``classify_cli``)."""
