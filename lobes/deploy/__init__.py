"""Deployment: ``gmptl-export`` (``export``, with ``--onnx`` ``onnx_export``),
``EmotionRecognizer`` (``inference``, torch), ``OnnxEmotionRecognizer`` (``onnx_runtime``,
onnxruntime without torch), what both share (``predictions``), ``gmptl-classify``
(``classify_cli``) and ``gmptl-app`` (``app``, a local Gradio page)."""
