"""The GMP-TL recipe's table of steps: the one place that says what each step is.

Every stage script, ``run_cv.py`` and the settings records read this table
(``lobes.runner.steps``). A step records in its ``settings.json`` (and so is asked to run
again when they change) the keys of ``hparams/common.yaml`` in the groups it reads, the keys of
its own hparams file, and its run options; never a ``RUN_ONLY`` key.
"""

from pathlib import Path

from lobes.runner.steps import StepSpec, StepTable

RECIPE_DIR = Path(__file__).resolve().parent
RECIPES = RECIPE_DIR.parents[1]

# The keys of common.yaml a step may record, by what they control.
GROUPS = {
    "data": {"seed", "corpus", "test_session", "valid_ratio", "expected_utterances",
             "prepare_options", "bad_audio", "emotion_classes"},
    "encoder": {"encoder_source"},
    "fine_tuning": {"freeze_encoder", "layerdrop", "apply_spec_augment", "mask_time_prob", "lr",
                    "lr_encoder", "pooling_mode", "dynamic_batching", "max_batch_length",
                    "num_buckets", "batch_size", "max_batch_size", "number_of_epochs"},
    "gmp_labels": {"gmp_layer", "gmp_layers", "gmp_scales", "gmp_gender_split"},
    "gmp_training": {"gmp_scale_weights"},
}
# Never recorded: where things are, how fast they run, what follows from other keys (or is
# replaced by an input digest), and the objects built from the other keys.
RUN_ONLY = {
    "data_folder", "output_root", "prepare_folder", "train_annotation", "valid_annotation",
    "test_annotation", "stage0_folder", "gmp_folder", "stage1_folder", "output_folder",
    "save_folder", "train_log", "cache_folder", "encoder_cache", "skip_prep", "num_workers",
    "cache_flush_every", "keep_feature_cache", "eval_batch_size",
    "encoder_dim", "n_emotions", "encoder_defaults", "encoder_init",
    "__set_seed", "encoder", "pooling", "pretrainer", "opt_class", "encoder_opt_class",
    "lr_annealing", "lr_annealing_encoder", "epoch_counter", "train_logger",
}
TRAINING = ("data", "encoder", "fine_tuning")

TABLE = StepTable(
    folder=RECIPE_DIR,
    common="common.yaml",
    steps=[
        StepSpec("stage0", "train_mtl.py", "stage0_mtl.yaml", groups=TRAINING),
        # the extraction trains nothing: only its evaluation precision changes its result
        StepSpec("gmp", "extract_gmp.py", "gmp.yaml", marker="cluster_report.json",
                 reads=("stage0",), groups=("data", "encoder", "gmp_labels"),
                 run_options=("eval_precision",), trains=False),
        StepSpec("stage1", "train.py", "stage1.yaml", reads=("gmp",),
                 groups=(*TRAINING, "gmp_labels", "gmp_training")),
        StepSpec("stage2", "train.py", "stage2.yaml", groups=TRAINING),
        StepSpec("baseline", "train.py", "baseline.yaml", groups=TRAINING),
    ],
    groups=GROUPS,
    run_only=RUN_ONLY,
    corpora={
        "iemocap": RECIPE_DIR / "iemocap_prepare.py",
        "cremad": RECIPES / "CREMA-D" / "GMP-TL" / "cremad_prepare.py",
        "ravdess": RECIPES / "RAVDESS" / "GMP-TL" / "ravdess_prepare.py",
        "msppodcast": RECIPES / "MSP-Podcast" / "GMP-TL" / "msppodcast_prepare.py",
        "emobox": RECIPES / "EmoBox" / "GMP-TL" / "emobox_prepare.py",
    },
)
