"""The real-recording data set (ast_hf.drumkits), built from the installed Debian package hydrogen-drumkits."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
import soundfile

from ast_hf import drumkits


@pytest.mark.parametrize("name, label", [
    ("Kick (Tama Superstar 22\")", "kick"), ("c3 - bass drum 1", "kick"), ("BassDrum", "kick"),
    ("Snare Rimshot (Pearl Free Floating Maple 14x3.5)", "snare"), ("Pearl Tom Floor", "tom"),
    ("Hi-Hat Pedal (Paiste Alpha Metal edge 14\")", "hihat"), ("Closed HH", "hihat"), ("Hat Op Dirty", "hihat"),
    ("Crash/Ride Bell (Paiste Rude Crash/Ride 18\")", "cymbal"), ("Zildjian Splash Choke", "cymbal"),
    ("Cowbell", "percussion"), ("Djembe3 Slap", "percussion"), ("Hand Clap", "percussion"),
    ("Pearl Side Stick", None), ("Rim Click (Pearl Free Floating Maple 14x3.5)", None), ("Zap 1", None),
])
def test_instrument_names_map_to_classes(name, label):
    assert drumkits.instrument_class(name) == label


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not drumkits.DRUMKITS_DIR.is_dir():
        pytest.fail("hydrogen-drumkits is not installed; run `bash scripts/setup.sh` (Debian package).")
    spec = drumkits.DrumkitsSpec(max_seconds=0.5)
    return spec, drumkits.build_drumkits_dataset(spec, cache_dir=tmp_path_factory.mktemp("cache"), verbose=False)


def test_evaluation_sources_never_appear_in_training(built):
    spec, root = built
    rows = {split: list(csv.DictReader(open(root / split / "metadata.csv"))) for split in ("train", "validation")}
    sources = {split: {r["source"] for r in split_rows} for split, split_rows in rows.items()}
    kits = {split: {r["kit"] for r in split_rows} for split, split_rows in rows.items()}
    assert sources["validation"] == set(spec.eval_sources) and not sources["train"] & sources["validation"]
    assert not kits["train"] & kits["validation"]
    for split in rows:  # every class in both splits, several clips each
        counts = Counter(r["label"] for r in rows[split])
        assert set(counts) == set(drumkits.CLASSES) and min(counts.values()) >= 10, (split, counts)
    assert 500 <= sum(len(r) for r in rows.values()) <= 600
    assert "Audiophob" not in kits["train"]


def test_clips_keep_their_recorded_format(built):
    spec, root = built
    rows = list(csv.DictReader(open(root / "train" / "metadata.csv")))
    infos = [soundfile.info(str(root / "train" / r["file_name"])) for r in rows]
    assert {i.format for i in infos} >= {"WAV", "FLAC", "AIFF"}
    assert {i.samplerate for i in infos} >= {44100, 48000} and {i.channels for i in infos} >= {1, 2}
    assert max(i.duration for i in infos) <= spec.max_seconds + 1e-3
    import datasets

    split = datasets.load_dataset("audiofolder", data_dir=str(root / "train"), split="train")
    assert sorted(set(split["label"])) == sorted(drumkits.CLASSES) and len(split) == len(rows)


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install hydrogen-drumkits"):
        drumkits.plan(tmp_path)
