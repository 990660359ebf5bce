"""What the benchmarks share: random-weight HuBERTs, the demo corpus, side-by-side timing.

Not a benchmark itself. Every benchmark runs offline on CPU: encoders are random-weight HuBERTs
written by ``lobes.fixtures.encoders.write_encoder`` and loaded through the project's own code
path (a local ``encoder_source`` folder), corpora are the synthetic demo corpus or drawn durations.
"""

import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "IEMOCAP" / "GMP-TL"
if str(REPO) not in sys.path:  # a checkout that is not installed
    sys.path.insert(0, str(REPO))

# HuBERT sizes. "base" is HF's HubertConfig default, i.e. facebook/hubert-base-ls960's
# architecture (12 layers, 768-d, 12 heads, FFN 3072, 512-channel CNN with group norm,
# 128-wide positional convolution in 16 groups); "mid" is a smaller encoder for quick runs.
SIZES = {
    "base": {},
    "mid": {
        "num_hidden_layers": 6, "hidden_size": 384, "num_attention_heads": 6,
        "intermediate_size": 1536, "conv_dim": (256,) * 7, "num_conv_pos_embeddings": 64,
    },
}


def write_hubert(out_dir, size="base", seed=0):
    """Save a random-weight HuBERT of ``size`` (see ``SIZES``) with its feature extractor.

    Dropout and LayerDrop are off so that step times do not depend on which layers a step drops
    (hubert-base-ls960 trains with LayerDrop 0.1; the encoder's FLOPs are otherwise the same).

    Example
    -------
    >>> import tempfile
    >>> folder = write_hubert(tempfile.mkdtemp(), "mid")
    >>> sorted(p.name for p in Path(folder).iterdir())
    ['config.json', 'model.safetensors', 'preprocessor_config.json']
    """
    import transformers

    from lobes.fixtures.encoders import TINY_FEATURE_EXTRACTOR, write_encoder

    transformers.logging.disable_progress_bar()
    config = {"model_type": "hubert", "hidden_dropout": 0.0, "attention_dropout": 0.0,
              "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "layerdrop": 0.0,
              **SIZES[size]}
    return write_encoder(config, TINY_FEATURE_EXTRACTOR, out_dir, seed)


def default_seed():
    """The recipe's ``seed`` (``hparams/common.yaml``): the batches its steps train on."""
    from lobes.runner import hparams as hp

    table = recipe_module("steps").TABLE
    return int(hp.raw_values(hp.compose(table.hparams_folder / table.common))["seed"])


def recipe_module(name):
    """Import ``recipes/IEMOCAP/GMP-TL/<name>.py`` as a module (the recipe is no package)."""
    from lobes.fixtures.recipe_modules import recipe_module as import_script

    return import_script(name, RECIPE)


def demo_manifests(out_dir, utts_per_speaker=30, test_session=1, seed=0):
    """Write (once) the demo corpus and one fold's manifests; return ``{split: manifest}``."""
    from lobes.data.datasets import SPLITS, load_manifest

    out_dir = Path(out_dir)
    prepare_folder = out_dir / f"prepare_fold{test_session}"
    if not (prepare_folder / "test.json").exists():
        corpus = out_dir / "IEMOCAP_full_release"
        if not corpus.exists():
            recipe_module("make_demo_corpus").make_demo_corpus(
                out_dir, seed=seed, utts_per_speaker=utts_per_speaker
            )
        recipe_module("iemocap_prepare").prepare_iemocap(
            corpus, prepare_folder, test_session, expected_utterances=0
        )
    return {split: load_manifest(prepare_folder / f"{split}.json") for split in SPLITS}


def cpu_model():
    """The CPU model name from /proc/cpuinfo (or ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_note():
    """The load average (1 and 5 min): on a shared machine it says how noisy the times are."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def status_kb(field):
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``); None where unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_cpu_peak():
    """Reset the process's peak resident set (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_peak_kb():
    """The process's peak resident set in kB: ``VmHWM``, else ``ru_maxrss``."""
    hwm = status_kb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def machine_line():
    """One line naming the machine, the torch thread count and the load."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {gpu}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); {load_note()}"
    )


def interleaved(functions, repeats, warmup=1):
    """Time each function of ``{name: fn}`` ``repeats`` times, round-robin; return medians.

    Round-robin repetitions see the same background load on a shared machine, so the ratio of
    two medians is steadier than either time alone.

    Returns
    -------
    dict
        ``{name: {"median": s, "times": [s, ...]}}``.

    Example
    -------
    >>> result = interleaved({"a": lambda: None, "b": lambda: None}, repeats=3, warmup=0)
    >>> sorted(result), len(result["a"]["times"])
    (['a', 'b'], 3)
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "times": t} for name, t in times.items()}
