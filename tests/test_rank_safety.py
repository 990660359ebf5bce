"""Rank-safe files under DDP: each rank's random states, one writer of the label encoder."""

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lobes.data.datasets import make_label_encoder
from lobes.training.checkpoints import AtomicCheckpointer, RandomStates

REPO = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("ddp_rank_files.py")


def _torchrun(folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(HELPER), str(folder)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp_rank_files")
    return folder, _torchrun(folder)


def test_each_rank_resumes_its_own_random_states(two_rank_run):
    folder, ranks = two_rank_run
    assert ranks[0]["drawn"] != ranks[1]["drawn"]  # the ranks drew differently
    for rank in (0, 1):
        assert ranks[rank]["drawn_after_resume"] == ranks[rank]["drawn"], rank
    (checkpoint,) = (folder / "save").glob("CKPT+*")
    assert sorted(path.name for path in checkpoint.iterdir()) == [
        "CKPT.yaml", "random_states.ckpt", "random_states.ckpt.rank1"]
    # rank 1's file is not taken for a recoverable's parameter file
    assert ranks[0]["paramfiles"] == ranks[1]["paramfiles"] == ["random_states"]
    assert json.loads((checkpoint / "random_states.ckpt").read_text())["world_size"] == 2


def test_resuming_with_another_number_of_ranks_warns(two_rank_run, caplog):
    folder, ranks = two_rank_run
    checkpointer = AtomicCheckpointer(folder / "save", recoverables={"rng": RandomStates()})
    checkpoint = checkpointer.find_checkpoint()
    with caplog.at_level(logging.WARNING, logger="lobes.training.checkpoints"):
        RandomStates().load(checkpoint.path / "random_states.ckpt")
    assert "2 process(es), this run has 1" in caplog.text
    # the single process is rank 0: it continues rank 0's stream
    drawn = [random.random(), float(np.random.rand()), torch.rand(3).tolist()]
    assert drawn == ranks[0]["drawn"]


def test_label_encoder_is_written_by_one_rank_and_other_classes_are_refused(two_rank_run):
    folder, ranks = two_rank_run
    assert ranks[0]["label_encoder_writes"] == [0]
    assert ranks[1]["label_encoder_writes"] == []
    assert ranks[0]["encoded"] == ranks[1]["encoded"] == [0, 1, 2, 3]
    for rank in (0, 1):
        message = ranks[rank]["other_classes_error"]
        assert str(folder / "label_encoder.txt") in message and "emotion_classes" in message


def test_label_encoder_keeps_the_class_order_and_reuses_a_matching_file(tmp_path):
    path = tmp_path / "save" / "label_encoder.txt"
    classes = ["neu", "hap", "ang", "sad"]
    encoder = make_label_encoder(classes, path)
    assert [encoder.encode_label(label) for label in classes] == [0, 1, 2, 3]
    written = path.read_text()
    again = make_label_encoder(classes, path)
    assert again.decode_ndim([0, 1, 2, 3]) == classes and path.read_text() == written
    with pytest.raises(ValueError, match="another emotion_classes") as error:
        make_label_encoder(["neu", "hap", "ang", "sad", "fru"], path)
    assert str(path) in str(error.value)
    assert path.read_text() == written  # never overwritten by the other list


def test_a_truncated_label_encoder_file_is_rebuilt(tmp_path):
    path = tmp_path / "label_encoder.txt"
    classes = ["neu", "hap", "ang", "sad"]
    make_label_encoder(classes, path)
    whole = path.read_text()
    path.write_text(whole[: whole.index("=====")])  # cut before the extras
    assert make_label_encoder(classes, path).decode_ndim([0, 1, 2, 3]) == classes
    assert path.read_text() == whole


def test_random_states_written_before_ranks_were_recorded_still_load(tmp_path):
    path = tmp_path / "random_states.ckpt"
    RandomStates().save(path)
    states = json.loads(path.read_text())
    assert states.pop("world_size") == 1
    path.write_text(json.dumps(states))  # the file format before this change
    first = random.random()
    RandomStates().load(path)
    assert random.random() == first
