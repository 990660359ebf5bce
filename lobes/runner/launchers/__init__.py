"""The launchers of a study's jobs: on the machine at hand (``local``) or queued on a Slurm
cluster through submitit (``slurm``). Each is imported on its own, when chosen."""
