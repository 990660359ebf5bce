"""The shared library of the GMP-TL recipes, one sub-package per role.

Imports run downward only, from the recipes through the runner to the model lobes:

- ``lobes.fixtures``: tiny and hub-configuration random-weight encoders, synthetic speech, the
  importer of recipe scripts (for the tests, the demo and the benchmarks only).
- ``lobes.runner``: hparams composition and checks, settings records, the steps of a recipe
  (``steps.StepTable``), planning and running a cross-validation, the disk plan, results tables.
- ``lobes.deploy``: exporting a trained model (ONNX too), inference (``EmotionRecognizer``, and
  ``OnnxEmotionRecognizer`` without torch), command lines, the browser app.
- ``lobes.training``: the ``Brain`` base of every training step, checkpoints, metrics.
- ``lobes.data``: audio reading, manifests and the preparation skeleton, datasets, the corpus
  registry.
- ``lobes.gmp``: the GMP extraction: feature cache, k-means, label files, cluster report.
- ``lobes.models``: the model lobes: encoder, pooling, heads, frame arithmetic.
- ``lobes.utils``: atomic file writes, figures, the errors every layer raises.

The library names no recipe: a recipe passes its hparams folder, its table of steps and its
corpus registry in.
"""
