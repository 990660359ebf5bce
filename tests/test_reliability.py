"""Bad input met at training time: gone or broken wavs are refused at start, or skipped."""

import json
import shutil

import pytest

from lobes.audio import AudioError
from lobes.data import dataio_prepare


@pytest.fixture()
def fold_with_bad_wavs(demo_corpus_dir, tmp_path):
    """Manifests of the demo corpus where one wav is gone and one is garbage since preparation."""
    wavs = sorted(demo_corpus_dir.glob("Session1/sentences/wav/*/*.wav"))[:12]
    truth = json.loads((demo_corpus_dir / "demo_truth.json").read_text())
    manifest = {}
    for wav in wavs:
        copy = tmp_path / "wav" / wav.name
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(wav, copy)
        entry = truth[wav.stem]
        manifest[wav.stem] = {"wav": str(copy), "duration": entry["duration"],
                              "emo": entry["emo"] or "neu", "gender": entry["gender"],
                              "spk": entry["spk"], "session": entry["session"]}
    gone, broken = list(manifest)[:2]
    (tmp_path / "wav" / f"{gone}.wav").unlink()
    (tmp_path / "wav" / f"{broken}.wav").write_bytes(b"not a wav at all")
    hparams = {"save_folder": str(tmp_path / "save")}
    for split in ("train", "valid", "test"):
        path = tmp_path / f"{split}.json"
        path.write_text(json.dumps(manifest))
        hparams[f"{split}_annotation"] = str(path)
    return hparams, gone, broken


def test_bad_wavs_stop_training_at_start_naming_every_file(fold_with_bad_wavs):
    hparams, gone, broken = fold_with_bad_wavs
    with pytest.raises(AudioError) as error:
        dataio_prepare(hparams)
    message = str(error.value)
    assert gone in message and broken in message
    assert "2 of 12 train utterances" in message and "bad_audio: skip" in message


def test_bad_wavs_are_skipped_with_a_count_when_asked(fold_with_bad_wavs, caplog):
    hparams, gone, broken = fold_with_bad_wavs
    datasets, _ = dataio_prepare({**hparams, "bad_audio": "skip"})
    for dataset in datasets.values():
        ids = [item["id"] for item in dataset]
        assert len(ids) == 10 and gone not in ids and broken not in ids
        assert all(len(item["sig"]) > 400 for item in dataset)
    assert "skipping 2 of 12 utterances with unusable audio" in caplog.text
