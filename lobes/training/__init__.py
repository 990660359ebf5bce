"""Training: the ``Brain`` base of every step (``brain``), crash-safe checkpoints and what a
finished step keeps (``checkpoints``), WA/UA metrics, confusion matrices and curves
(``metrics``)."""
