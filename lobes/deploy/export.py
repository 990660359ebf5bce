"""Export a trained stage-2 (or baseline) run into a self-contained model folder.

Usage::

    gmptl-export STAGE2_FOLDER MODEL_FOLDER [--overwrite] [--onnx]

``STAGE2_FOLDER`` is the output folder of ``train.py hparams/stage2.yaml`` (or
``hparams/baseline.yaml``): its ``hyperparams.yaml``, ``encoder.ckpt``, ``save/CKPT+*``
checkpoints, ``save/label_encoder.txt`` and ``metrics.json``. ``MODEL_FOLDER`` receives:

- ``hyperparams.yaml``: inference hparams for ``lobes.deploy.inference.EmotionRecognizer``;
- ``encoder/``: the fine-tuned HuBERT and its feature-extractor config (HF ``save_pretrained``),
  loaded through the same ``SSLEncoder`` as in training;
- ``pooling.ckpt``, ``emotion_head.ckpt``: the weights of the checkpoint with the best valid UA
  (the one the test evaluation used);
- ``label_encoder.txt`` and a model card, ``README.md``;
- with ``--onnx``: ``model.onnx`` and ``head.onnx`` for onnxruntime without torch, checked
  against torch before they are written (``lobes.deploy.onnx_export``).

No path into the training tree is written: the folder can be copied anywhere and loads offline.
"""

import argparse
import datetime
import json
import os
import pydoc
import shutil
import tempfile
from pathlib import Path

import torch
from ruamel.yaml import YAML
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.checkpoints import Checkpointer

from lobes.data.datasets import make_label_encoder
from lobes.deploy.inference import quiet_library_logs
from lobes.models.encoder import SSLEncoder
from lobes.training.brain import load_encoder_weights

HEAD_MODULES = ("pooling", "emotion_head")
STEP_NAMES = {"stage0": "the emotion + gender multi-task stage, which feeds the GMP extraction",
              "gmp": "the GMP extraction", "stage1": "frame-level GMP prediction"}
SELECTION_KEY = "UA"


def default_module_specs(encoder_dim, n_classes, pooling_mode="mean", margin=0.2, scale=30.0):
    """The stage-2 modules as ``{name: (class path, constructor arguments)}``.

    Example
    -------
    >>> default_module_specs(64, 4)["emotion_head"]
    ('lobes.models.heads.CosineHead', {'input_size': 64, 'n_classes': 4})
    """
    return {
        "pooling": ("lobes.models.pooling.MaskedPooling", {"mode": pooling_mode,
                                                    "input_size": encoder_dim}),
        "emotion_head": ("lobes.models.heads.CosineHead", {"input_size": encoder_dim,
                                                    "n_classes": n_classes}),
        "emotion_loss": ("lobes.models.heads.AMSoftmaxLoss", {"margin": margin, "scale": scale}),
    }


def _yaml_object(name, class_path, arguments):
    lines = [f"{name}: !new:{class_path}"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in arguments.items()]
    return "\n".join(lines)


def inference_hparams_text(module_specs, classes, output_layers=(-1,), chunk_seconds=30.0,
                           system="stage2"):
    """The ``hyperparams.yaml`` of a model folder.

    Every path is relative to ``model_folder``, which ``EmotionRecognizer.from_hparams`` fills
    in with the folder it loads from.

    Example
    -------
    >>> text = inference_hparams_text(default_module_specs(64, 2), ["neu", "sad"])
    >>> "source: !ref <model_folder>/encoder" in text
    True
    """
    objects = "\n".join(
        _yaml_object(name, *module_specs[name]) for name in (*HEAD_MODULES, "emotion_loss")
    )
    return f"""\
# Inference hyperparameters of a GMP-TL speech emotion recognizer, written by gmptl-export.
# Load with lobes.deploy.inference.EmotionRecognizer.from_hparams(source=<this folder>), which sets
# model_folder to the folder it loads from: nothing here points outside this folder.

model_folder: !PLACEHOLDER
system: {system}
emotion_classes: {json.dumps(list(classes))}
# long inputs are encoded in chunks of this many seconds (bounded encoder memory)
chunk_seconds: {json.dumps(float(chunk_seconds))}

encoder: !new:lobes.models.encoder.SSLEncoder
    source: !ref <model_folder>/encoder
    save_path: !ref <model_folder>/encoder
    output_layers: {json.dumps([int(layer) for layer in output_layers])}
    freeze: all
{objects}
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

modules:
    encoder: !ref <encoder>
    pooling: !ref <pooling>
    emotion_head: !ref <emotion_head>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        pooling: !ref <pooling>
        emotion_head: !ref <emotion_head>
        label_encoder: !ref <label_encoder>
    paths:
        pooling: !ref <model_folder>/pooling.ckpt
        emotion_head: !ref <model_folder>/emotion_head.ckpt
        label_encoder: !ref <model_folder>/label_encoder.txt
"""


def write_model_folder(model_folder, encoder_source, classes, module_specs=None,
                       checkpoint_files=None, encoder_weights=None, output_layers=(-1,),
                       encoder_cache=None, model_card=None, system="stage2", overwrite=False):
    """Write a self-contained model folder for ``EmotionRecognizer``.

    The folder is built under a temporary name beside ``model_folder`` and renamed at the end,
    so a failed export leaves nothing half-written.

    Arguments
    ---------
    model_folder : str or Path
        Destination; must not exist unless ``overwrite``.
    encoder_source : str
        Hub id or local folder of the HuBERT the run started from (its architecture).
    classes : list of str
        Emotion classes in score order.
    module_specs : dict, optional
        ``{"pooling" | "emotion_head" | "emotion_loss": (class path, arguments)}``; default
        ``default_module_specs`` (stage 2: mean pooling, cosine head, AM-Softmax scores).
    checkpoint_files : dict, optional
        ``{"pooling" | "emotion_head": state dict file}``; a module without one is saved as
        freshly initialised (an untrained model, for tests).
    encoder_weights : str or Path, optional
        ``encoder.ckpt`` of the run (``SSLEncoder.state_dict()``); default: the source's.
    output_layers : sequence of int
        ``output_layers`` of the run's encoder (the last one feeds the pooling).
    encoder_cache : str, optional
        Where a hub encoder is cached (default: a temporary folder).
    model_card : str, optional
        Markdown of ``README.md``; default: a short generic card.
    system : str
        ``stage2`` or ``baseline`` (recorded in the hparams).
    overwrite : bool
        Replace an existing ``model_folder``.

    Returns
    -------
    str
        ``model_folder``.

    Example
    -------
    >>> from lobes.fixtures.encoders import write_tiny_hubert
    >>> encoder_source = write_tiny_hubert(tempfile.mkdtemp(), n_layers=1, dim=8)
    >>> folder = write_model_folder(Path(tempfile.mkdtemp()) / "model", encoder_source, ["a", "b"])
    >>> sorted(path.name for path in Path(folder).iterdir())  # doctest: +NORMALIZE_WHITESPACE
    ['README.md', 'emotion_head.ckpt', 'encoder', 'hyperparams.yaml', 'label_encoder.txt',
     'pooling.ckpt']
    """
    model_folder = Path(model_folder)
    if model_folder.exists() and any(model_folder.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{model_folder} exists and is not empty: choose another folder or overwrite it "
            "(gmptl-export --overwrite)"
        )
    model_folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{model_folder.name}.", dir=model_folder.parent))
    # mkdtemp makes the folder private (0700); the model folder gets the usual permissions
    umask = os.umask(0)
    os.umask(umask)
    building.chmod(0o777 & ~umask)
    try:
        try:
            encoder = SSLEncoder(
                encoder_source, encoder_cache or building / "hub_cache", output_layers,
                freeze="all",
            )
        except OSError as error:
            raise FileNotFoundError(
                f"cannot load the encoder the run started from ({encoder_source}): its "
                "architecture is needed to rebuild the fine-tuned encoder; make that folder or "
                f"hub model available ({error})"
            ) from error
        if module_specs is None:
            module_specs = default_module_specs(encoder.hidden_size, len(classes))
        if encoder_weights is not None:
            load_encoder_weights(encoder, encoder_weights)
        encoder.model.save_pretrained(building / "encoder")
        encoder.feature_extractor.save_pretrained(building / "encoder")
        shutil.rmtree(building / "hub_cache", ignore_errors=True)
        checkpoint_files = checkpoint_files or {}
        for name in HEAD_MODULES:
            if name in checkpoint_files:
                shutil.copyfile(checkpoint_files[name], building / f"{name}.ckpt")
            else:
                class_path, arguments = module_specs[name]
                module = pydoc.locate(class_path)(**arguments)
                torch.save(module.state_dict(), building / f"{name}.ckpt")
        make_label_encoder(classes, building / "label_encoder.txt")
        (building / "hyperparams.yaml").write_text(
            inference_hparams_text(module_specs, classes, output_layers, system=system)
        )
        (building / "README.md").write_text(model_card or generic_model_card(classes))
        if model_folder.exists():
            shutil.rmtree(model_folder)
        building.rename(model_folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return str(model_folder)


def generic_model_card(classes):
    """A short model card for a folder written without a training run."""
    return (
        "# GMP-TL speech emotion recognizer\n\n"
        f"Classes: {', '.join(classes)}. Written by `lobes.deploy.export.write_model_folder` "
        f"on {datetime.date.today().isoformat()} without a training run.\n"
    )


def read_training_hparams(stage_folder):
    """The ``hyperparams.yaml`` of a run, read as YAML without building any object.

    Tags (``!new:``, ``!name:``...) are kept on the nodes: a module node is a mapping with a
    ``tag`` (its class) holding its constructor arguments.
    """
    path = Path(stage_folder) / "hyperparams.yaml"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: give the output folder of a finished stage-2 or baseline run"
        )
    return YAML(typ="rt").load(path.read_text())


def _plain(value):
    """A YAML value as plain Python (dicts, lists, scalars); tagged values are an error."""
    tag = getattr(getattr(value, "tag", None), "value", None)
    if tag:
        raise ValueError(f"cannot export a tagged hparam value ({tag} ...)")
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    raise ValueError(f"cannot export hparam value {value!r}")


def module_spec(hparams, name):
    """``(class path, arguments)`` of the module ``name`` of the training hparams.

    Example
    -------
    >>> node = YAML(typ="rt").load("head: !new:torch.nn.Linear\\n  in_features: 4\\n")
    >>> module_spec(node, "head")
    ('torch.nn.Linear', {'in_features': 4})
    """
    node = hparams.get(name)
    tag = getattr(getattr(node, "tag", None), "value", None) or ""
    if not tag.startswith("!new:"):
        raise ValueError(f"the training hparams hold no !new: object {name!r} to export")
    return tag[len("!new:"):], _plain(dict(node))


def best_checkpoint(save_folder):
    """The checkpoint with the best valid UA: the one the test evaluation used.

    Raises a clear error when ``save_folder`` holds no checkpoint with a ``UA`` entry.
    """
    save_folder = Path(save_folder)
    if not save_folder.is_dir():
        raise FileNotFoundError(f"{save_folder} not found: the run has no checkpoints")
    checkpoint = Checkpointer(save_folder).find_checkpoint(max_key=SELECTION_KEY)
    if checkpoint is None:
        raise FileNotFoundError(
            f"{save_folder} holds no checkpoint with a valid {SELECTION_KEY}: did training run "
            "at least one epoch?"
        )
    missing = [name for name in HEAD_MODULES if name not in checkpoint.paramfiles]
    if missing:
        raise FileNotFoundError(f"checkpoint {checkpoint.path} has no {', '.join(missing)}")
    return checkpoint


def _manifest_size(path):
    try:
        return len(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def fold_text(hparams):
    """How the run's test fold was held out, in the corpus' own terms.

    Example
    -------
    >>> fold_text({"corpus": "cremad", "test_session": 2})
    'test fold 2 (speaker-independent folds: no test speaker in training)'
    """
    corpus, fold = hparams.get("corpus", "iemocap"), hparams.get("test_session", "?")
    if corpus == "iemocap":
        return f"test session {fold} (leave-one-session-out)"
    if corpus == "msppodcast":
        return "the official test set (Train / Development / Test split)"
    return f"test fold {fold} (speaker-independent folds: no test speaker in training)"


def training_model_card(hparams, checkpoint, metrics, classes, system):
    """The ``README.md`` of an exported run: data, fold, encoder, scores, date, usage."""
    sizes = {split: _manifest_size(hparams.get(f"{split}_annotation"))
             for split in ("train", "valid", "test")}
    sizes_text = ", ".join(
        f"{size if size is not None else '?'} {split}" for split, size in sizes.items()
    )
    method = {
        "stage2": "GMP-TL stage 2: encoder fine-tuned with multi-scale GMP pseudo-labels "
                  "(stage 1), then pooled cosine classifier trained with AM-Softmax",
        "baseline": "baseline: the pre-trained encoder fine-tuned with plain cross-entropy "
                    "(pooled linear classifier)",
    }.get(system, system)
    test_scores = "not recorded"
    if metrics:
        test_scores = (f"WA {100 * metrics['WA']:.1f} %, UA {100 * metrics['UA']:.1f} % "
                       f"({metrics.get('n_utterances', '?')} utterances)")
    valid_ua = checkpoint.meta.get(SELECTION_KEY)
    valid_ua_text = "?" if valid_ua is None else f"{valid_ua:.4f}"
    counter_file = checkpoint.paramfiles.get("counter")
    epoch = Path(counter_file).read_text().strip() if counter_file else "?"
    return f"""\
# GMP-TL speech emotion recognizer ({system})

{method}. Exported by `gmptl-export` on {datetime.date.today().isoformat()}.

| | |
|---|---|
| classes | {", ".join(classes)} |
| test scores | {test_scores} |
| selected checkpoint | epoch {epoch}, valid UA {valid_ua_text} |
| fold | {fold_text(hparams)} |
| training data | corpus `{hparams.get("data_folder", "?")}`; {sizes_text} utterances |
| encoder | fine-tuned from `{hparams.get("encoder_source", "?")}` |
| pooling / head | {module_spec(hparams, "pooling")[1].get("mode", "?")} pooling, \
`{module_spec(hparams, "emotion_head")[0]}` |

Scores: the probabilities are the softmax of the margin-free utterance scores (as in the
training-time `predictions.csv`); the frame track scores each 20 ms frame with the same head.

## Usage

    gmptl-classify THIS_FOLDER speech.wav [--json] [--plot track.png]

```python
from lobes.deploy.inference import EmotionRecognizer

recognizer = EmotionRecognizer.from_hparams(source="THIS_FOLDER", savedir="THIS_FOLDER_cache")
prediction = recognizer.classify_file("speech.wav")
print(prediction.label, prediction.probabilities)
```

`hyperparams.yaml` is hyperpyyaml: loading it runs the Python objects it names. Use model
folders from trusted sources only.
"""


def export_run(stage_folder, model_folder, overwrite=False):
    """Turn a stage-2 or baseline output folder into a model folder (see the module docstring).

    Returns
    -------
    str
        ``model_folder``.
    """
    stage_folder = Path(stage_folder)
    hparams = read_training_hparams(stage_folder)
    system = str(hparams.get("step", "stage2"))
    if system not in ("stage2", "baseline"):
        raise ValueError(
            f"{stage_folder} is a {system} run ({STEP_NAMES.get(system, system)}); export the "
            "output folder of a stage-2 or baseline run, which classifies emotions"
        )
    encoder_weights = stage_folder / "encoder.ckpt"
    if not encoder_weights.exists():
        raise FileNotFoundError(
            f"{encoder_weights} not found: the run has not finished (it is written last)"
        )
    checkpoint = best_checkpoint(stage_folder / "save")
    label_encoder = CategoricalEncoder()
    label_encoder.load(stage_folder / "save" / "label_encoder.txt")
    label_encoder.expect_len(int(hparams.get("n_emotions", len(label_encoder))))
    classes = label_encoder.decode_ndim(list(range(len(label_encoder))))
    module_specs = {name: module_spec(hparams, name)
                    for name in (*HEAD_MODULES, "emotion_loss")}
    metrics_path = stage_folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else None
    encoder_node = hparams.get("encoder") or {}
    return write_model_folder(
        model_folder,
        encoder_source=str(hparams["encoder_source"]),
        classes=classes,
        module_specs=module_specs,
        checkpoint_files={name: checkpoint.paramfiles[name] for name in HEAD_MODULES},
        encoder_weights=encoder_weights,
        output_layers=_plain(encoder_node.get("output_layers", [-1])),
        encoder_cache=str(hparams["encoder_cache"]) if hparams.get("encoder_cache") else None,
        model_card=training_model_card(hparams, checkpoint, metrics, classes, system),
        system=system,
        overwrite=overwrite,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="gmptl-export",
        description="Turn a stage-2 (or baseline) output folder into a self-contained model "
                    "folder for gmptl-classify and lobes.deploy.inference.EmotionRecognizer.",
    )
    parser.add_argument("stage_folder", help="output folder of a finished stage-2/baseline run")
    parser.add_argument("model_folder", help="the model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    parser.add_argument("--onnx", action="store_true",
                        help="also write model.onnx (and head.onnx) for onnxruntime, checked "
                             "against torch (needs pip install '.[onnx]')")
    args = parser.parse_args(argv)
    quiet_library_logs()
    try:
        folder = export_run(args.stage_folder, args.model_folder, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        raise SystemExit(f"gmptl-export: error: {error}") from error
    print(f"model folder written to {folder}; try: gmptl-classify {folder} speech.wav")
    if args.onnx:
        from lobes.deploy.onnx_export import OnnxCheckError, export_onnx

        try:
            report = export_onnx(folder)
        except (ImportError, OnnxCheckError) as error:
            raise SystemExit(f"gmptl-export: error: no ONNX model written to {folder}: "
                             f"{error}") from error
        print(f"model.onnx written ({report['exporter']}, opset {report['opset']}, "
              f"{report['export_seconds']:.1f} s; onnxruntime agrees with torch within "
              f"{report['max_probability_difference']:.1e}); try: gmptl-classify {folder} "
              "speech.wav --backend onnx")


if __name__ == "__main__":
    main()
