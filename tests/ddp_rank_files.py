"""One rank of the DDP rank-safety test (run under ``torchrun --nproc_per_node=2``, gloo).

``python ddp_rank_files.py FOLDER``: each rank seeds its generators differently, saves a
checkpoint holding ``RandomStates`` through ``AtomicCheckpointer`` (on every rank, as
``sb.Brain`` does) and records what it draws next; then, as a restarted run would, seeds every
rank alike, recovers the checkpoint and records what it draws. It also builds the label encoder
file together with the other rank and records which ranks wrote it. Results go to
``FOLDER/rank<r>.json``.
"""

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch


def draw():
    return [random.random(), float(np.random.rand()), torch.rand(3).tolist()]


def main(folder):
    from speechbrain.utils.distributed import ddp_barrier

    from lobes.data import datasets as data
    from lobes.training.checkpoints import AtomicCheckpointer, RandomStates

    folder = Path(folder)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    checkpointer = AtomicCheckpointer(folder / "save",
                                      recoverables={"random_states": RandomStates()})
    result = {}
    random.seed(100 + rank)
    np.random.seed(100 + rank)
    torch.manual_seed(100 + rank)
    checkpointer.save_and_keep_only(meta={"UA": 0.5}, max_keys=["UA"])
    result["drawn"] = draw()

    random.seed(7)  # a restart: every rank seeded alike
    np.random.seed(7)
    torch.manual_seed(7)
    checkpoint = checkpointer.recover_if_possible()
    result["paramfiles"] = sorted(checkpoint.paramfiles)
    result["drawn_after_resume"] = draw()

    writers = []
    original_save = data._AtomicSaveEncoder.save

    def counting_save(encoder, path):
        writers.append(rank)
        original_save(encoder, path)

    data._AtomicSaveEncoder.save = counting_save
    classes = ["neu", "hap", "ang", "sad"]
    encoder = data.make_label_encoder(classes, folder / "label_encoder.txt")
    result["label_encoder_writes"] = writers
    result["encoded"] = [encoder.encode_label(label) for label in classes]
    ddp_barrier()
    try:
        data.make_label_encoder(list(reversed(classes)), folder / "label_encoder.txt")
    except ValueError as error:
        result["other_classes_error"] = str(error)
    (folder / f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(sys.argv[1])
