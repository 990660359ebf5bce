"""What every stage's ``Brain`` shares: two optimisers, epoch statistics, selection, export.

Each stage script defines its own ``Brain`` subclass (``compute_forward`` and
``compute_objectives``); this base holds the parts that would otherwise be copied between them:

- two optimisers with their own learning rates, one for the encoder (``encoder_opt_class``) and
  one for everything else (``opt_class``), both checkpointed, with NewBob annealing on the valid
  loss (``lr_annealing_encoder``, ``lr_annealing``);
- running statistics per stage (``self.count``), the emotion report on valid and test
  (``self.report``), logging through the train logger;
- checkpoint selection on ``selection_key`` (valid UA by default) and, after testing, the
  export of the selected encoder to ``<output_folder>/encoder.ckpt`` for the next stage.
"""

import logging
from collections import defaultdict
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from lobes.data.datasets import (
    UNKNOWN_GENDER_INDEX,
    dataio_prepare,
    eval_loader_options,
    train_loader_options,
)
from lobes.training.checkpoints import export_weights, finish_step
from lobes.training.metrics import EmotionReport, format_confusion
from lobes.utils.io import write_json_atomic

logger = logging.getLogger(__name__)


def load_encoder_weights(encoder, path):
    """Load an exported encoder state dict (``encoder.ckpt``) into ``encoder``.

    Raises a clear error naming the file when it is missing or does not fit the encoder (for
    example a checkpoint of another encoder size).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"encoder checkpoint {path} not found: run the stage that writes it first"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    resized = sorted(key for key in set(expected) & set(state)
                     if expected[key].shape != state[key].shape)
    if missing or resized or set(state) - set(expected):
        problem = (f"{len(missing)} missing tensors (e.g. {missing[0]})" if missing else
                   f"{len(resized)} tensors of other shapes (e.g. {resized[0]}: "
                   f"{tuple(state[resized[0]].shape)} in the file, "
                   f"{tuple(expected[resized[0]].shape)} here)" if resized else
                   "tensors this encoder does not have")
        raise RuntimeError(
            f"encoder checkpoint {path} does not fit this encoder: {problem}; was it written "
            "with another encoder_source?"
        )
    encoder.load_state_dict(state)


def gender_loss(logits, genders):
    """Cross-entropy over the utterances whose gender is known; theirs are the only hits.

    Utterances of an unknown gender (``UNKNOWN_GENDER_INDEX``, from corpora that do not give
    it) are left out. A batch without any known gender gives a zero loss that still depends on
    ``logits``, so every parameter keeps a (zero) gradient, as distributed training needs.

    Arguments
    ---------
    logits : torch.Tensor
        ``[batch, 2]`` gender logits.
    genders : torch.Tensor
        ``[batch]`` gender indices, ``UNKNOWN_GENDER_INDEX`` where unknown.

    Returns
    -------
    loss, correct, known
        The mean loss over the known genders, how many of them the argmax gets right, and how
        many are known.

    Example
    -------
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]])
    >>> loss, correct, known = gender_loss(logits, torch.tensor([0, UNKNOWN_GENDER_INDEX, 1]))
    >>> round(float(loss), 4), int(correct), int(known)
    (2.5668, 1, 2)
    >>> gender_loss(logits, torch.full((3,), UNKNOWN_GENDER_INDEX))[0]
    tensor(0.)
    """
    known = genders != UNKNOWN_GENDER_INDEX
    n_known = known.sum()
    if n_known == 0:
        return logits.sum() * 0.0, n_known, n_known
    loss = torch.nn.functional.cross_entropy(logits[known], genders[known])
    return loss, (logits[known].argmax(1) == genders[known]).sum(), n_known


class EncoderBrain(sb.Brain):
    """Base of the stage Brains. Subclasses set ``selection_key`` and fill the statistics.

    In ``compute_objectives`` a subclass calls ``self.count(name, correct, total)`` for each
    accuracy it reports (emitted as ``name`` = correct / total) and ``self.report.append`` for
    utterance emotion scores (emitted as WA / UA on valid and test).
    """

    selection_key = "UA"

    def init_optimizers(self):
        encoder_params = [p for p in self.modules.encoder.parameters() if p.requires_grad]
        head_params = [
            p
            for name, module in self.modules.items()
            if name != "encoder"
            for p in module.parameters()
            if p.requires_grad
        ]
        self.optimizers_dict = {"opt_class": self.hparams.opt_class(head_params)}
        self.optimizer = self.optimizers_dict["opt_class"]
        if encoder_params:
            self.optimizers_dict["encoder"] = self.hparams.encoder_opt_class(encoder_params)
        if self.checkpointer is not None:
            for name, optimizer in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(f"optimizer_{name}", optimizer)

    def on_stage_start(self, stage, epoch=None):
        self.counts = defaultdict(lambda: [0.0, 0.0])
        self.report = EmotionReport(self.emotion_classes)

    @property
    def emotion_classes(self):
        return self.hparams.label_encoder.decode_ndim(
            list(range(len(self.hparams.label_encoder)))
        )

    def count(self, name, correct, total):
        """Add ``correct`` hits out of ``total`` to the running accuracy ``name``."""
        self.counts[name][0] += float(correct)
        self.counts[name][1] += float(total)

    def stage_stats(self, stage_loss):
        stats = {"loss": stage_loss}
        # an accuracy over nothing (gender_acc of a corpus without genders) is left out
        stats.update({name: hits / total for name, (hits, total) in self.counts.items() if total})
        if self.report.ids:
            metrics = self.report.metrics()
            stats.update(WA=metrics["WA"], UA=metrics["UA"])
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = self.stage_stats(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            lrs = {}
            for name, optimizer in self.optimizers_dict.items():
                scheduler = getattr(
                    self.hparams, "lr_annealing_encoder" if name == "encoder" else "lr_annealing"
                )
                old_lr, new_lr = scheduler(stage_loss)
                sb.nnet.schedulers.update_learning_rate(optimizer, new_lr)
                lrs[f"lr_{name}"] = old_lr
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **lrs},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta=stats, max_keys=[self.selection_key])
            return
        self.hparams.train_logger.log_stats(
            stats_meta={"Epoch loaded": self.hparams.epoch_counter.current}, test_stats=stats
        )
        if sb.utils.distributed.if_main_process():
            write_json_atomic(Path(self.hparams.output_folder) / "test_stats.json", stats)
        if self.report.ids and sb.utils.distributed.if_main_process():
            metrics = self.report.write(
                self.hparams.output_folder, title=f"{self.hparams.output_folder} (test)"
            )
            logger.info(
                "test WA %.4f UA %.4f\n%s", metrics["WA"], metrics["UA"],
                format_confusion(metrics["confusion"], self.emotion_classes),
            )

    @classmethod
    def train_and_test(cls, hparams, run_opts, gmp_label_paths=None):
        """The datasets of the fold (``lobes.data.datasets.dataio_prepare``), then a Brain of
        this class on the hparams' modules and checkpointer, trained, tested and exported
        (``fit_and_test``)."""
        datasets, hparams["label_encoder"] = dataio_prepare(hparams, gmp_label_paths)
        brain = cls(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
                    checkpointer=hparams["checkpointer"])
        brain.fit_and_test(datasets)
        return brain

    def fit_and_test(self, datasets):
        """Train on ``train`` (selecting on ``valid``), test the selected model, export it.

        ``datasets`` and the loader options come from ``lobes.data.datasets``; the epochs from the
        hparams' ``epoch_counter``. A run resumes from its last checkpoint.
        """
        hparams = vars(self.hparams)
        if hparams.get("encoder_init"):
            # parameter transfer from the previous step's exported encoder (a resumed run's
            # checkpoint then replaces it)
            run_on_main(self.hparams.pretrainer.collect_files)
            self.hparams.pretrainer.load_collected()
        train_options = train_loader_options(hparams, datasets["train"])
        # SpeechBrain calls set_epoch only on samplers it made itself; without it the dynamic
        # batches' order would depend on how many epochs this process has run, and a resumed
        # run would not repeat the uninterrupted one
        self.train_sampler = train_options.get("batch_sampler", train_options.get("sampler"))
        self.fit(
            self.hparams.epoch_counter,
            datasets["train"],
            datasets["valid"],
            train_loader_kwargs=train_options,
            valid_loader_kwargs=eval_loader_options(hparams),
        )
        self.evaluate(
            datasets["test"],
            max_key=self.selection_key,
            test_loader_kwargs=eval_loader_options(hparams),
        )
        self.export_encoder()

    def export_encoder(self):
        """Publish the selected encoder for the next step and keep one copy of the weights.

        ``encoder.ckpt`` (the step's completion marker) is the selected checkpoint's encoder
        file, hard-linked; then the other checkpoints and the optimizer states are deleted
        (``lobes.training.checkpoints.finish_step``). Main process only.
        """
        if not sb.utils.distributed.if_main_process():
            return
        selected = self.checkpointer.find_checkpoint(max_key=self.selection_key)
        path = Path(self.hparams.output_folder) / "encoder.ckpt"
        export_weights(selected.paramfiles["encoder"], path)
        logger.info("encoder weights exported to %s", path)
        finish_step(self.checkpointer.checkpoints_dir, path, selected)
