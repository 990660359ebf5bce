"""The start of every stage script: arguments, hparams, experiment folder, corpus preparation."""

import shutil
import sys
from pathlib import Path

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from lobes.hparams_check import check_hparams_keys, hparams_keys_of_text


def load_recipe(argv=None):
    """Parse ``script.py HPARAMS.yaml [--key=value ...]`` the SpeechBrain way and prepare the fold.

    Checks the hparams file's keys against the recipe's shipped hparams (misspellings stop here,
    before any work), joins the DDP process group when launched by ``torchrun``, loads the
    hyperpyyaml with the command-line overrides, creates the experiment folder
    (``output_folder``) and runs the corpus preparation (the hparams' ``prepare`` function) on
    the main process only.

    Returns
    -------
    hparams : dict
    run_opts : dict
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:] if argv is None else argv)
    shipped = sorted((Path(sys.modules["__main__"].__file__).resolve().parent / "hparams")
                     .glob("*.yaml"))
    if shipped:
        check_hparams_keys(hparams_file, shipped, extra_keys=hparams_keys_of_text(overrides))
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    # SpeechBrain saved this module as the "recipe"; keep the stage script beside it
    if sb.utils.distributed.if_main_process():
        main_script = Path(sys.modules["__main__"].__file__)
        shutil.copy(main_script, Path(hparams["output_folder"]) / main_script.name)
    if "prepare" in hparams:
        run_on_main(hparams["prepare"])
    return hparams, run_opts
