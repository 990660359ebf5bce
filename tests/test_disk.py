"""Disk: what a real run needs at its peak, and the runner's stop when the disk is short."""

import shutil
from collections import namedtuple

import pytest
from recipe_helpers import RECIPE_DIR, REPO, recipe_module
from transformers import AutoConfig

from lobes.fixtures.encoders import hub_config, parameter_count
from lobes.models.frames import n_frames
from lobes.runner import disk

IEMOCAP_HOURS = 7.0  # the 5531 four-class utterances


def test_default_five_fold_gmp_tl_and_baseline_with_hubert_large_fits_40_gb():
    """The README's arithmetic: 5 folds x 4 training steps of hubert-large, 3 checkpoints while
    a step trains, the downloaded encoder, one fold's float16 feature cache (layer 12)."""
    values = hub_config("hubert_large")
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    total, front_end = disk.parameter_counts(config)
    assert total == parameter_count("hubert_large") and 4e6 < front_end < 5e6
    frames = (n_frames(16000) + 1) * 3600 * IEMOCAP_HOURS  # 50 frames a second
    cache = frames * config.hidden_size * 2
    lines, peak = disk.plan(4, 5, total, front_end, cache)
    assert 2.4e9 < cache < 2.7e9
    assert dict((line.split(":")[0], size) for line, size in lines)["weights kept"] == (
        20 * total * 4)
    assert 35e9 < peak <= 40e9, peak / 1e9
    kept_cache = disk.plan(4, 5, total, front_end, cache, keep_feature_cache=True)[1]
    assert kept_cache > peak + 4 * cache  # keeping every fold's cache costs 5 caches


def test_the_runner_stops_before_any_work_when_the_disk_is_short(
        monkeypatch, tmp_path, demo_corpus_dir, demo_hubert_dir, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10**3))
    with pytest.raises(disk.DiskSpaceError, match="need about .* GB of disk at its peak but "
                                                  ".* has 0.0 GB free"):
        recipe_module("run_cv").main([
            "--data_folder", str(demo_corpus_dir), "--output_folder", str(tmp_path / "out"),
            "--overrides", str(REPO / "hparams" / "encoders" / "tiny.yaml"),
            str(RECIPE_DIR / "hparams" / "demo.yaml"), "--encoder_source", str(demo_hubert_dir),
            "--folds", "1"])
    assert "disk plan" in capsys.readouterr().out
    assert not list((tmp_path / "out" / "fold1").glob("stage*"))
