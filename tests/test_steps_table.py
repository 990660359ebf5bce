"""The recipe's table of steps (``recipes/IEMOCAP/GMP-TL/steps.py``): every shared key is
classified, and a step's settings digest moves with exactly the keys it reads.

For every key of ``common.yaml`` and every step, the key is changed alone and the step's
settings are recorded again (``lobes.runner.settings.step_settings`` on the resolved values, as
``plan_step`` does): the digest changes when the step reads the key and never otherwise.
"""

import re

import pytest
from recipe_helpers import RECIPE_DIR, recipe_table

from lobes.runner import hparams as hp
from lobes.runner import recipe
from lobes.runner.settings import digest, is_plain, step_settings

TABLE = recipe_table()
COMMON = hp.compose(TABLE.hparams_folder / TABLE.common)
COMMON_KEYS = sorted(hp.keys_of(COMMON) - {"extends"})


def changed(value):
    """Another value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    if isinstance(value, dict):
        return {**value, "extra": "1"}
    return 1


@pytest.fixture(scope="module")
def base(tiny_hubert_dir, tmp_path_factory):
    """The overrides that resolve every step file, and each step's resolved values."""
    root = tmp_path_factory.mktemp("steps")
    overrides = {"data_folder": str(root / "data"), "encoder_source": tiny_hubert_dir,
                 "output_root": str(root / "fold1")}
    values = {spec.name: resolved(spec, overrides) for spec in TABLE}
    return overrides, values


def resolved(spec, overrides):
    text = hp.compose(TABLE.hparams_folder / spec.hparams)
    return recipe.resolve_values(text, {key: value for key, value in overrides.items()
                                        if key in hp.keys_of(text)})


def step_digest(spec, values):
    return digest(step_settings(values, TABLE, spec.name, {"precision": "fp32"}), {})


def test_every_key_of_common_yaml_is_in_one_group_or_run_only():
    places = {key: [name for name, keys in TABLE.groups.items() if key in keys]
              + (["run_only"] if key in TABLE.run_only else []) for key in COMMON_KEYS}
    assert {key: found for key, found in places.items() if len(found) != 1} == {}
    assert TABLE.grouped_keys() <= set(COMMON_KEYS) | {"cache_folder", "cache_flush_every",
                                                       "keep_feature_cache"}


@pytest.mark.parametrize("spec", list(TABLE), ids=lambda spec: spec.name)
def test_a_key_changes_a_steps_digest_exactly_when_the_step_reads_it(spec, base):
    overrides, values = base
    before = step_digest(spec, values[spec.name])
    checked = 0
    for key in COMMON_KEYS:
        value = values[spec.name][key]
        if key in TABLE.run_only or not is_plain(value) or key in overrides:
            continue
        after = step_digest(spec, resolved(spec, {**overrides, key: changed(value)}))
        reads = key in TABLE.read_keys(spec.name)
        assert (after != before) == reads, (
            f"{spec.name}: changing {key} {'did not change' if reads else 'changed'} its digest")
        checked += 1
    assert checked == len(set(COMMON_KEYS) - TABLE.run_only) - 1  # all but encoder_source


def test_the_extraction_ignores_training_only_keys(base):
    overrides, values = base
    gmp = TABLE["gmp"]
    before = step_digest(gmp, values["gmp"])
    for key, value in {"max_batch_size": 8, "gmp_scale_weights": [2.0, 1.0, 1.0],
                       "num_buckets": 7, "lr": 0.5}.items():
        assert step_digest(gmp, resolved(gmp, {**overrides, key: value})) == before, key
    assert step_digest(gmp, resolved(gmp, {**overrides, "gmp_scales": [4, 8]})) != before


@pytest.mark.parametrize("spec", list(TABLE), ids=lambda spec: spec.name)
def test_a_steps_own_file_and_script_name_no_shared_key_it_does_not_read(spec):
    """A cross-check of the table against the code: the step's own hparams file and its script
    never refer to a shared key outside its groups (run-only keys aside)."""
    own = hp.strip_extends((TABLE.hparams_folder / spec.hparams).read_text())
    script = (RECIPE_DIR / spec.script).read_text()
    unread = set(COMMON_KEYS) - TABLE.read_keys(spec.name) - TABLE.run_only
    in_file = {key for key in unread if re.search(rf"<{key}[>\[]", own)}
    assert in_file == set()
    if spec.script != "train.py":  # train.py runs three steps; its keys are checked per step
        in_script = {key for key in unread if re.search(rf"hparams\[\"{key}\"\]|\.{key}\b",
                                                       script)}
        assert in_script == set()


def test_the_table_knows_each_steps_script_marker_and_maker():
    assert [spec.name for spec in TABLE] == ["stage0", "gmp", "stage1", "stage2", "baseline"]
    assert TABLE.script_of("gmp") == "extract_gmp.py" and TABLE["gmp"].marker == \
        "cluster_report.json"
    assert TABLE.maker("stage0_folder") == "python train_mtl.py hparams/stage0_mtl.yaml"
    assert TABLE.step_of_hparams("stage2.yaml").name == "stage2"
    assert all((RECIPE_DIR / spec.script).exists() for spec in TABLE)
    assert all(path.exists() for path in TABLE.corpora.values())
