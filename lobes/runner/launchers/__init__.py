"""Launchers: run the jobs of a study (``lobes.runner.study``) that are not finished yet.

- ``local``: up to ``--jobs`` ready jobs at once on the machine at hand, one GPU set each.
- ``slurm``: the whole graph queued at once on a Slurm cluster through submitit, each job
  after the jobs it needs (``afterok``).
"""
