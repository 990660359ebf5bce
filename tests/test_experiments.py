"""The experiments users run: changed settings, override files, single stages by hand, copied
hparams files, other corpora by configuration, and the errors that say what to do.

Each error of the README's table ("Mistakes and what they say") has a test here.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from recipe_helpers import (
    RECIPE_DIR,
    REPO,
    TINY_ENCODER_HPARAMS,
    interruptible,
    recipe_module,
    run_cv,
    tiny_encoder,
)
from test_other_corpora import make_cremad, make_msppodcast, make_ravdess

from lobes.data.manifests import PreparationError
from lobes.fixtures.encoders import write_random_encoder
from lobes.runner.hparams import HparamsError
from lobes.runner.recipe import RecipeError

HPARAMS = RECIPE_DIR / "hparams"
DEMO = HPARAMS / "demo.yaml"
SHORT = ["--number_of_epochs=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """80 demo utterances (8 per speaker): a valid split of 8 in every fold."""
    make_demo_corpus = recipe_module("make_demo_corpus").make_demo_corpus
    return make_demo_corpus(tmp_path_factory.mktemp("corpus"), seed=9, utts_per_speaker=8)


def stage(script, hparams, corpus, encoder, root, *extra):
    """Run a stage script in this process, as ``python script.py hparams ...`` would."""
    recipe_module(script).main([str(hparams), f"--data_folder={corpus}",
                                "--overrides", str(TINY_ENCODER_HPARAMS), str(DEMO),
                                f"--encoder_source={encoder}", f"--output_root={root}",
                                *extra])


def stage_process(script, hparams, corpus, encoder, root, *extra):
    return subprocess.run(
        [sys.executable, str(RECIPE_DIR / f"{script}.py"), str(hparams),
         f"--data_folder={corpus}", *tiny_encoder(encoder), f"--output_root={root}",
         "--expected_utterances=0", *extra],
        capture_output=True, text=True, timeout=600)


# ---- settings-aware reuse (the runner's: test_run_cv.py) ----

def test_a_stage_script_reuses_a_finished_step_and_refuses_changed_settings(
        corpus, demo_hubert_dir, tmp_path):
    root = tmp_path / "fold1"
    stage("train_mtl", HPARAMS / "stage0_mtl.yaml", corpus, demo_hubert_dir, root, *SHORT)
    weights = root / "stage0" / "encoder.ckpt"
    written = weights.stat().st_mtime_ns
    stage("train_mtl", HPARAMS / "stage0_mtl.yaml", corpus, demo_hubert_dir, root, *SHORT)
    assert weights.stat().st_mtime_ns == written
    with pytest.raises(RecipeError, match="lr: 0.001 -> 0.01"):
        stage("train_mtl", HPARAMS / "stage0_mtl.yaml", corpus, demo_hubert_dir, root, *SHORT,
              "--lr=0.01")


# ---- override files, single stages, copied files, corpora ----

@pytest.mark.parametrize("fragment", sorted((REPO / "hparams" / "encoders").glob("*.yaml")),
                         ids=lambda path: path.stem)
def test_every_shipped_override_file_works_with_every_system_selection(
        fragment, corpus, demo_hubert_dir, tmp_path):
    name = fragment.stem
    source = demo_hubert_dir if name == "tiny" else write_random_encoder(
        name, tmp_path / "encoder", hidden_size=32, conv_dim=16)  # full depth: the real layers
    run_cv_module = recipe_module("run_cv")
    for systems in ("baseline", "gmp_tl,baseline,no_gender,single_scale,no_stage1"):
        run_cv_module.main([
            "--data_folder", str(corpus), "--output_folder", str(tmp_path / "out"),
            "--overrides", str(fragment), str(DEMO), "--encoder_source", str(source),
            "--folds", "1", "--systems", systems, "--plan_only",
        ])


def test_stage_scripts_take_the_runners_override_files(corpus, demo_hubert_dir, tmp_path):
    """Keys that only other steps use are skipped (one override file serves every step); a key
    that no step knows stops the run with a did-you-mean."""
    extra = tmp_path / "mine.yaml"
    extra.write_text("am_margin: 0.3\nkmeans_backend: sklearn\nnumber_of_epochs: 1\n")
    root = tmp_path / "fold1"
    stage("train", HPARAMS / "baseline.yaml", corpus, demo_hubert_dir, root,
          "--overrides", str(extra))
    assert json.loads((root / "baseline" / "metrics.json").read_text())["n_utterances"] > 0
    settings = json.loads((root / "baseline" / "settings.json").read_text())["settings"]
    assert "am_margin" not in settings and settings["number_of_epochs"] == 1
    extra.write_text("am_margn: 0.3\n")
    with pytest.raises(HparamsError, match="'am_margn' \\(did you mean 'am_margin'\\?\\)"):
        stage("train", HPARAMS / "baseline.yaml", corpus, demo_hubert_dir, root,
              "--overrides", str(extra))


def test_a_stage_alone_says_which_step_to_run_first(corpus, demo_hubert_dir, tmp_path):
    root = tmp_path / "fold1"
    completed = stage_process("train", HPARAMS / "stage2.yaml", corpus, demo_hubert_dir, root)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert "run `python train.py hparams/stage1.yaml` with the same" in completed.stderr
    assert "or set encoder_init: null" in completed.stderr
    assert not (root / "stage2").exists()
    with pytest.raises(RecipeError, match="python train_mtl.py hparams/stage0_mtl.yaml"):
        stage("extract_gmp", HPARAMS / "gmp.yaml", corpus, demo_hubert_dir, root)
    with pytest.raises(RecipeError, match="python extract_gmp.py hparams/gmp.yaml"):
        stage("train", HPARAMS / "stage1.yaml", corpus, demo_hubert_dir, root)
    with pytest.raises(RecipeError, match="stage2.yaml configures the step 'stage2', which "
                                          "train.py runs, not train_mtl.py"):
        stage("train_mtl", HPARAMS / "stage2.yaml", corpus, demo_hubert_dir, root)


def test_a_copied_hparams_file_runs_from_any_folder(corpus, demo_hubert_dir, tmp_path):
    copy = tmp_path / "elsewhere" / "deeper" / "my_stage0.yaml"
    copy.parent.mkdir(parents=True)
    text = (HPARAMS / "stage0_mtl.yaml").read_text()
    copy.write_text(text.replace("lambda_gender: 1.0", "lambda_gender: 0.5"))
    stage("train_mtl", copy, corpus, demo_hubert_dir, tmp_path / "fold1", *SHORT)
    settings = json.loads((tmp_path / "fold1" / "stage0" / "settings.json").read_text())
    assert settings["settings"]["lambda_gender"] == 0.5
    saved = (tmp_path / "fold1" / "stage0" / "hyperparams.yaml").read_text()
    assert not re.search(r"^extends:", saved, re.M) and "lambda_gender: 0.5" in saved


def test_the_corpus_is_chosen_by_configuration_in_a_stage_script(demo_hubert_dir, tmp_path):
    corpus, _ = make_ravdess(tmp_path / "data")
    root = tmp_path / "fold1"
    stage("train", HPARAMS / "baseline.yaml", corpus, demo_hubert_dir, root, *SHORT,
          "--corpus=ravdess", "--prepare_options={classes: '4'}")
    metrics = json.loads((root / "baseline" / "metrics.json").read_text())
    assert metrics["classes"] == json.loads((root / "prepare" / "classes.json").read_text())
    assert len(metrics["classes"]) == 4
    with pytest.raises(HparamsError, match="corpus 'ravdes' \\(did you mean 'ravdess'\\?\\)"):
        stage("train", HPARAMS / "baseline.yaml", corpus, demo_hubert_dir, tmp_path / "x",
              "--corpus=ravdes")


# ---- mistakes and what they say (the README's table) ----

@pytest.mark.parametrize("extra, message", [
    (["--lr=fast"], "override lr: 'fast' is text, but lr takes a number (default 0.0001)"),
    (["--number_of_epochs=[3]"], "number_of_epochs: [3] is a list, but number_of_epochs takes"),
    (["--numbr_of_epochs=3"], "'numbr_of_epochs' (did you mean 'number_of_epochs'?)"),
    (["--encoder_dim=32"], "encoder_dim cannot be set: it is read from the encoder's config"),
    (["--gmp_layer=9"], "gmp_layers [9] do not exist in"),
    (["--prepare_options={classs: 6}"], "prepare_iemocap has no option 'classs'"),
])
def test_wrong_settings_stop_before_any_work(extra, message, corpus, demo_hubert_dir,
                                             tmp_path):
    with pytest.raises(HparamsError) as raised:
        stage("extract_gmp", HPARAMS / "gmp.yaml", corpus, demo_hubert_dir, tmp_path, *extra)
    assert message in str(raised.value)
    assert not (tmp_path / "gmp").exists()


def test_a_stage_without_its_data_folder_says_which_key_to_give(demo_hubert_dir, tmp_path):
    with pytest.raises(HparamsError, match="data_folder must be given: add --data_folder="):
        recipe_module("train").main([str(HPARAMS / "baseline.yaml"), *tiny_encoder(
            demo_hubert_dir)])


def test_an_empty_validation_split_is_refused(corpus, demo_hubert_dir, tmp_path):
    with pytest.raises(PreparationError, match="the valid split is empty: .* raise valid_ratio"):
        stage("train", HPARAMS / "baseline.yaml", corpus, demo_hubert_dir, tmp_path, *SHORT,
              "--valid_ratio=0.0")


def test_folds_the_corpus_lacks_stop_the_runner_before_any_training(demo_hubert_dir, tmp_path):
    cremad, _ = make_cremad(tmp_path / "cremad")
    completed = run_cv(tmp_path / "out", cremad, demo_hubert_dir, "--corpus", "cremad",
                       "--folds", "1,6", check=False)
    assert completed.returncode != 0
    assert "fold 6: fold must be from 1 to n_folds (5), got 6" in completed.stderr
    assert not list((tmp_path / "out").glob("fold*/stage0"))
    msp, _ = make_msppodcast(tmp_path / "msp")
    completed = run_cv(tmp_path / "msp_out", msp, demo_hubert_dir, "--corpus", "msppodcast",
                       check=False)
    assert completed.returncode != 0 and "fold 2:" in completed.stderr
    assert not list((tmp_path / "msp_out").glob("fold*/stage0"))


def test_a_stage0_encoder_of_another_model_is_named(corpus, demo_hubert_dir, tiny_hubert_dir,
                                                     tmp_path):
    root = tmp_path / "fold1"
    stage("train_mtl", HPARAMS / "stage0_mtl.yaml", corpus, tiny_hubert_dir, root, *SHORT)
    with pytest.raises(RecipeError, match="stage0 was trained from encoder_source .*, but this "
                                          "run uses .*: give the same encoder_source"):
        stage("extract_gmp", HPARAMS / "gmp.yaml", corpus, demo_hubert_dir, root)


def test_ctrl_c_says_how_to_resume(corpus, demo_hubert_dir, tmp_path):
    root = tmp_path / "fold1"
    process = subprocess.Popen(
        [sys.executable, str(RECIPE_DIR / "train.py"), str(HPARAMS / "baseline.yaml"),
         f"--data_folder={corpus}", *tiny_encoder(demo_hubert_dir), f"--output_root={root}",
         "--number_of_epochs=50", "--expected_utterances=0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    log = root / "baseline" / "log.txt"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "Going into epoch" in log.read_text()):
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted: run the same command again to resume" in stderr
    assert "Traceback" not in stderr
