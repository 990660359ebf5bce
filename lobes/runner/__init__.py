"""The runner: hparams composition and checks (``hparams``), settings records (``settings``), a
recipe's table of steps (``steps``), the start of every stage script (``recipe``),
cross-validation planning and launching (``cv``), the disk plan (``disk``), results
(``results``)."""
