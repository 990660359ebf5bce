"""Hub encoder configurations and their random-weight stand-ins (lobes/fixtures/encoders.py)."""

import importlib
import inspect
import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

from lobes.fixtures.encoders import (
    HUB_CONFIGS,
    SHRUNK_SIZE,
    SIZE_FIELDS,
    hub_config,
    parameter_count,
    shrunk,
    write_random_encoder,
)

NAMES = sorted(HUB_CONFIGS)

MODEL_CLASS = {"hubert": "HubertModel", "wavlm": "WavLMModel", "wav2vec2": "Wav2Vec2Model"}

# Fields every entry must state (the structure and behaviour of the base model).
REQUIRED_FIELDS = {
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "layer_norm_eps", "conv_dim", "conv_kernel",
    "conv_stride", "conv_bias", "feat_extract_norm", "feat_extract_activation",
    "do_stable_layer_norm", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
    "hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout",
    "final_dropout", "layerdrop", "apply_spec_augment", "mask_time_prob", "mask_time_length",
    "mask_time_min_masks", "mask_feature_prob", "mask_feature_length", "mask_feature_min_masks",
}
REQUIRED_BY_TYPE = {
    "hubert": {"feat_proj_layer_norm"},
    "wavlm": {"num_buckets", "max_bucket_distance"},
    "wav2vec2": set(),
}
FE_FIELDS = {"feature_size", "sampling_rate", "padding_value", "do_normalize",
             "return_attention_mask"}

# Published sizes the brief gives (fairseq / pre-training checkpoints, heads included), and the
# transformers base-model counts computed here (HubertModel / WavLMModel / Wav2Vec2Model).
KNOWN_SIZES = {
    "hubert_base": 94.4e6,
    "hubert_large": 316.6e6,
    "wavlm_base_plus": 94.4e6,
    "wavlm_large": 315.5e6,
    "wav2vec2_large": 317.4e6,
}
BASE_MODEL_COUNTS = {
    "hubert_base": 94_371_712,
    "hubert_large": 315_438_720,
    "wavlm_base_plus": 94_381_936,
    "wavlm_large": 315_453_120,
    "wav2vec2_large": 315_438_720,
}

LENGTHS = [400, 719, 720, 16000, 16123]


def expected_frames(n_samples):
    return (n_samples - 400) // 320 + 1


@pytest.fixture(scope="module")
def shrunk_dirs(tmp_path_factory):
    return {name: shrunk(name, tmp_path_factory.mktemp(name)) for name in NAMES}


def test_five_encoders_with_their_hub_ids():
    assert {name: entry["hub_id"] for name, entry in HUB_CONFIGS.items()} == {
        "hubert_base": "facebook/hubert-base-ls960",
        "hubert_large": "facebook/hubert-large-ll60k",
        "wavlm_base_plus": "microsoft/wavlm-base-plus",
        "wavlm_large": "microsoft/wavlm-large",
        "wav2vec2_large": "facebook/wav2vec2-large-lv60",
    }


@pytest.mark.parametrize("name", NAMES)
def test_entry_states_every_behaviour_field_and_where_it_was_checked(name):
    entry = HUB_CONFIGS[name]
    cfg = entry["config"]
    missing = REQUIRED_FIELDS | REQUIRED_BY_TYPE[cfg["model_type"]]
    assert missing - set(cfg) == set()
    assert set(entry["feature_extractor"]) == FE_FIELDS
    assert entry["feature_extractor"]["sampling_rate"] == 16000
    assert isinstance(entry["verified"], str) and "unverified" in entry["verified"]
    # The front end of all five: receptive field 400 samples, stride 320.
    assert cfg["conv_kernel"] == [10, 3, 3, 3, 3, 2, 2]
    assert cfg["conv_stride"] == [5, 2, 2, 2, 2, 2, 2]
    # Every stated key is a field of the transformers config or read by the model code (so no
    # typo is silently carried along).
    model_type = cfg["model_type"]
    config = AutoConfig.for_model(model_type)
    source = inspect.getsource(
        importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    )
    unknown = [
        k for k in cfg
        if k != "model_type" and not hasattr(config, k) and f"config.{k}" not in source
    ]
    assert unknown == []


def test_key_values_that_tell_the_five_apart():
    table = {
        name: (
            c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"],
            c["intermediate_size"], c["feat_extract_norm"], c["do_stable_layer_norm"],
            c["conv_bias"], c["layerdrop"], c["mask_time_prob"],
        )
        for name, c in ((n, HUB_CONFIGS[n]["config"]) for n in NAMES)
    }
    assert table == {
        "hubert_base": (12, 768, 12, 3072, "group", False, False, 0.1, 0.05),
        "hubert_large": (24, 1024, 16, 4096, "layer", True, True, 0.1, 0.05),
        "wavlm_base_plus": (12, 768, 12, 3072, "group", False, False, 0.05, 0.05),
        "wavlm_large": (24, 1024, 16, 4096, "layer", True, False, 0.1, 0.075),
        "wav2vec2_large": (24, 1024, 16, 4096, "layer", True, True, 0.0, 0.05),
    }
    assert HUB_CONFIGS["wavlm_base_plus"]["feature_extractor"]["do_normalize"] is False


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_model_keeps_every_behaviour_flag_of_its_hub_config(name, shrunk_dirs):
    folder = Path(shrunk_dirs[name])
    saved = json.loads((folder / "config.json").read_text())
    hub = HUB_CONFIGS[name]["config"]
    differing = {
        key: (saved.get(key, "<absent>"), value)
        for key, value in hub.items()
        if key not in SIZE_FIELDS and saved.get(key, "<absent>") != value
    }
    assert differing == {}
    saved_fe = json.loads((folder / "preprocessor_config.json").read_text())
    assert {k: saved_fe[k] for k in FE_FIELDS} == HUB_CONFIGS[name]["feature_extractor"]


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_model_is_shrunk_in_depth_and_width_only(name, shrunk_dirs):
    saved = json.loads((Path(shrunk_dirs[name]) / "config.json").read_text())
    hub = HUB_CONFIGS[name]["config"]
    width = SHRUNK_SIZE["hidden_size"]
    assert saved["num_hidden_layers"] == SHRUNK_SIZE["n_layers"]
    assert saved["hidden_size"] == width
    assert saved["conv_dim"] == [SHRUNK_SIZE["conv_dim"]] * 7
    assert saved["intermediate_size"] * hub["hidden_size"] == width * hub["intermediate_size"]
    heads = saved["num_attention_heads"]
    assert width % heads == 0 and heads <= hub["num_attention_heads"]
    assert all(width % h for h in range(heads + 1, hub["num_attention_heads"] + 1))
    groups = saved["num_conv_pos_embedding_groups"]
    assert width % groups == 0 and groups <= hub["num_conv_pos_embedding_groups"]
    assert saved["num_conv_pos_embeddings"] == 16


@pytest.mark.parametrize("name", NAMES)
def test_shrunk_model_loads_offline_and_gives_one_frame_per_320_samples(
    name, shrunk_dirs, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    folder = shrunk_dirs[name]
    hub = HUB_CONFIGS[name]
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == MODEL_CLASS[hub["config"]["model_type"]]
    for key in ("layerdrop", "mask_time_prob", "do_stable_layer_norm", "feat_extract_norm",
                "conv_bias", "apply_spec_augment"):
        assert getattr(model.config, key) == hub["config"][key], key
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    for key, value in hub["feature_extractor"].items():
        assert getattr(extractor, key) == value, key
    for n_samples in LENGTHS:
        wav = torch.randn(n_samples).numpy()
        inputs = extractor(wav, sampling_rate=16000, return_tensors="pt")
        assert ("attention_mask" in inputs) == hub["feature_extractor"]["return_attention_mask"]
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state
        assert hidden.shape == (1, expected_frames(n_samples), SHRUNK_SIZE["hidden_size"])
        assert torch.isfinite(hidden).all()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    def weights(seed, sub):
        folder = write_random_encoder("wavlm_base_plus", tmp_path / sub, seed=seed, **SHRUNK_SIZE)
        return AutoModel.from_pretrained(folder).state_dict()

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_width_rules_for_an_awkward_width():
    cfg = hub_config("hubert_base", hidden_size=40)
    assert cfg["num_attention_heads"] == 10  # largest divisor of 40 not above 12
    assert cfg["intermediate_size"] == 160  # the hub's 4x
    assert cfg["num_conv_pos_embedding_groups"] == 10  # largest divisor of 40 not above 16
    assert cfg["num_hidden_layers"] == 12 and cfg["conv_dim"] == [512] * 7
    depth_only = hub_config("wavlm_large", n_layers=3)
    assert {k: v for k, v in depth_only.items() if k != "num_hidden_layers"} == {
        k: v for k, v in HUB_CONFIGS["wavlm_large"]["config"].items() if k != "num_hidden_layers"
    }


def test_encoder_config_returns_a_copy():
    cfg = hub_config("hubert_large")
    cfg["conv_dim"][0] = 1
    cfg["layerdrop"] = 0.5
    assert HUB_CONFIGS["hubert_large"]["config"]["conv_dim"][0] == 512
    assert HUB_CONFIGS["hubert_large"]["config"]["layerdrop"] == 0.1


@pytest.mark.parametrize(
    "kwargs", [{"hidden_size": 2048}, {"n_layers": 0}, {"conv_dim": 513}, {"n_layers": 2.5}]
)
def test_sizes_that_are_not_a_shrink_are_refused(kwargs):
    with pytest.raises(ValueError):
        hub_config("hubert_base", **kwargs)


def test_unknown_encoder_is_a_clear_error(tmp_path):
    with pytest.raises(KeyError, match="hubert_base"):
        write_random_encoder("hubert_xlarge", tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_known_sizes(name):
    count = parameter_count(name)
    assert count == BASE_MODEL_COUNTS[name]
    assert abs(count - KNOWN_SIZES[name]) / KNOWN_SIZES[name] < 0.01


def test_full_size_hubert_base_is_written_and_loads(tmp_path):
    folder = write_random_encoder("hubert_base", tmp_path)
    saved = json.loads((Path(folder) / "config.json").read_text())
    hub = HUB_CONFIGS["hubert_base"]["config"]
    assert {k: saved[k] for k in hub} == hub
    model = AutoModel.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == parameter_count("hubert_base")
    assert os.path.getsize(Path(folder) / "model.safetensors") > 4 * 94e6
