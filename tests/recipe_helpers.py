"""Helpers shared by the tests: importing recipe scripts, running the CV runner, small folds."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from lobes.fixtures.recipe_modules import recipe_module as import_script

REPO = Path(__file__).resolve().parents[1]
RECIPE_DIR = REPO / "recipes" / "IEMOCAP" / "GMP-TL"
TINY_ENCODER_HPARAMS = REPO / "hparams" / "encoders" / "tiny.yaml"
# Test overrides on top of hparams/demo.yaml: the learning tests use the demo's settings; the
# extraction tests read the feature cache, which the recipe deletes by default.
CV_TEST_OVERRIDES = "keep_feature_cache: True\n"


def interruptible():
    """``preexec_fn`` of a process a test sends SIGINT, as a terminal's Ctrl-C would: a shell
    running the suite as a background job ignores SIGINT, and its children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def recipe_table():
    """The GMP-TL recipe's table of steps (``recipes/IEMOCAP/GMP-TL/steps.py``)."""
    return recipe_module("steps").TABLE


def tiny_encoder(folder):
    """Stage-script arguments for a tiny test HuBERT: its hparams fragment and its folder."""
    return ["--overrides", str(TINY_ENCODER_HPARAMS), f"--encoder_source={folder}"]


def recipe_module(name, recipe_dir=RECIPE_DIR):
    """Import a recipe script (not a package) as a module, once per test session."""
    return import_script(name, recipe_dir)


def run_cv(output_folder, data_folder, encoder_source, *extra, overrides_text=CV_TEST_OVERRIDES,
           check=True):
    """Run run_cv.py in a subprocess with the demo overrides (+ ``overrides_text``)."""
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    test_overrides = output_folder.parent / f"{output_folder.name}_overrides.yaml"
    test_overrides.write_text(overrides_text)
    command = [
        sys.executable, str(RECIPE_DIR / "run_cv.py"), "--data_folder", str(data_folder),
        "--output_folder", str(output_folder), "--encoder_source", str(encoder_source),
        "--overrides", str(TINY_ENCODER_HPARAMS), str(RECIPE_DIR / "hparams" / "demo.yaml"),
        str(test_overrides), *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, check=check)


def demo_manifest(demo_corpus_dir, folder, per_class=3, emotions=("neu", "hap", "ang", "sad")):
    """A manifest of ``per_class`` Session 1 demo wavs per emotion, copied into
    ``folder/wav`` so that a test may damage them."""
    truth = json.loads((Path(demo_corpus_dir) / "demo_truth.json").read_text())
    chosen, counts = {}, {}
    for wav in sorted(Path(demo_corpus_dir).glob("Session1/sentences/wav/*/*.wav")):
        entry = truth[wav.stem]
        if entry["emo"] not in emotions or counts.get(entry["emo"], 0) == per_class:
            continue
        counts[entry["emo"]] = counts.get(entry["emo"], 0) + 1
        copy = Path(folder) / "wav" / wav.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, copy)
        chosen[wav.stem] = {"wav": str(copy), "duration": entry["duration"], "emo": entry["emo"],
                            "gender": entry["gender"], "spk": entry["spk"],
                            "session": entry["session"]}
    assert len(chosen) == per_class * len(emotions)
    return chosen


def write_fold_manifests(manifest, folder):
    """The same manifest as train, valid and test, and its ``classes.json``; returns the
    ``dataio_prepare`` hparams."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    present = {entry["emo"] for entry in manifest.values()}
    classes = [emo for emo in ("neu", "hap", "ang", "sad") if emo in present]
    (folder / "classes.json").write_text(json.dumps(classes))
    hparams = {"save_folder": str(folder / "save")}
    for split in ("train", "valid", "test"):
        path = folder / f"{split}.json"
        path.write_text(json.dumps(manifest))
        hparams[f"{split}_annotation"] = str(path)
    return hparams
