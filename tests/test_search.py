"""`ast-hf search`: indexes made by the real `ast-hf embed` command over real speech (espeak-ng words in several
voices) and a few other sounds, searched with a tiny random AST. The ranking is checked against cosine similarity
computed with numpy from the pipeline's own vectors; a folder of parquet parts and the .npz give the parquet's
answer; the settings stored in the parquet metadata choose the model and layers; the errors are one line each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from conftest import speak, tiny_model
from transformers import pipeline

import ast_hf
from ast_hf import cli
from ast_hf.search import EmbeddingIndex, add_search_parser, search_audio

WORDS = ["yes", "stop", "seven", "water"]
VOICES = [("en", 160, 50), ("en-us", 140, 35), ("en+f3", 180, 70)]
RATE = 16000


def other_sounds() -> dict[str, np.ndarray]:
    """Sounds that are not speech: a steady tone, a rising chirp and quiet white noise, one second each."""
    t = np.arange(RATE) / RATE
    noise = np.random.default_rng(0).standard_normal(RATE) * 0.05
    return {"tone.wav": 0.3 * np.sin(2 * np.pi * 440 * t), "chirp.wav": 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t),
            "noise.wav": noise}


def embed(inputs: list[Path], model: Path, output: Path, *options: str) -> None:
    """The real `ast-hf embed` command line."""
    status = cli.main(["embed", *map(str, inputs), "--model", str(model), "--output", str(output), "--no-progress",
                       *options])
    assert status == 0 and output.exists()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SimpleNamespace:
    """A tiny model, 15 recordings (4 words x 3 voices, 3 other sounds) embedded by `ast-hf embed` to a parquet file,
    a .npz and a parquet of `--layer 0 2` (and copies of them without stored settings, as older files are), and two
    queries not in the index: a word in an unheard voice and a file
    that is not audio."""
    root = tmp_path_factory.mktemp("search")
    model = tiny_model()
    model.save_pretrained(root / "model")
    ast_hf.ASTFeatureExtractor(max_length=model.config.max_length).save_pretrained(root / "model")
    clips = root / "clips"
    clips.mkdir()
    for word in WORDS:
        for voice, speed, pitch in VOICES:
            soundfile.write(clips / f"{word}_{voice}.wav", speak(word, voice, speed, pitch), RATE)
    for name, samples in other_sounds().items():
        soundfile.write(clips / name, samples.astype(np.float32), RATE)
    queries = root / "queries"
    queries.mkdir()
    soundfile.write(queries / "yes_en-gb.wav", speak("yes", "en-gb", 150, 60), RATE)
    (queries / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    embed([clips], root / "model", root / "emb.parquet")
    embed([clips], root / "model", root / "emb.npz")
    embed([clips], root / "model", root / "layered.parquet", "--layer", "0", "2")
    # Indexes as written before the settings were stored: no metadata, no settings array.
    for name in ("emb.parquet", "layered.parquet"):
        pq.write_table(pq.read_table(root / name).replace_schema_metadata(None), root / f"old-{name}")
    with np.load(root / "emb.npz") as arrays:
        np.savez(root / "old-emb.npz", paths=arrays["paths"], embeddings=arrays["embeddings"])
    files = sorted(str(path) for path in clips.iterdir())
    return SimpleNamespace(root=root, model=root / "model", clips=clips, files=files,
                           unheard=queries / "yes_en-gb.wav", broken=queries / "broken.wav")


def search_command(argv: list[str]) -> int:
    """`ast-hf search ARGV` through a parser of its own (works before `search` is wired into ast_hf.cli)."""
    parser = argparse.ArgumentParser(prog="ast-hf")
    add_search_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["search", *argv])
    return args.run(args)


def cli_has_search() -> bool:
    parser = cli.build_parser()
    return any(isinstance(action, argparse._SubParsersAction) and "search" in action.choices
               for action in parser._actions)


def test_an_indexed_recording_finds_itself_first(corpus):
    query = str(corpus.clips / "stop_en-us.wav")
    [result] = search_audio([query], corpus.root / "emb.parquet", model=corpus.model, top_k=3)
    assert result["query"] == query and len(result["matches"]) == 3
    assert result["matches"][0]["path"] == query
    assert result["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert result["matches"][0]["score"] >= result["matches"][1]["score"] >= result["matches"][2]["score"]
    # A top_k beyond the index's size gives every recording once.
    [result] = search_audio(query, corpus.root / "emb.parquet", model=corpus.model, top_k=100)
    assert sorted(match["path"] for match in result["matches"]) == corpus.files


def test_ranking_is_the_cosine_similarity_of_the_pipelines_vectors(corpus):
    embedder = pipeline("audio-feature-extraction", model=str(corpus.model))
    # The second route: every recording and query through the pipeline, cosine similarity with numpy.
    vectors = np.stack([embedder(path)["embedding"] for path in corpus.files]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = EmbeddingIndex.load(corpus.root / "emb.parquet")
    assert sorted(index.paths) == corpus.files
    np.testing.assert_allclose(index.vectors, vectors[[corpus.files.index(path) for path in index.paths]], atol=1e-6)
    queries = [str(corpus.unheard), str(corpus.clips / "tone.wav"), str(corpus.clips / "water_en+f3.wav")]
    results = search_audio(queries, index, model=corpus.model, top_k=len(corpus.files))
    for query, result in zip(queries, results, strict=True):
        vector = embedder(query)["embedding"].astype(np.float64)
        expected = vectors @ (vector / np.linalg.norm(vector))
        scores = np.array([match["score"] for match in result["matches"]])
        np.testing.assert_allclose(scores, np.sort(expected)[::-1], atol=1e-5)  # the ranking's scores
        # Each path at its rank has its own brute-force score (ranks may swap only between near-equal scores).
        by_path = dict(zip(corpus.files, expected, strict=True))
        np.testing.assert_allclose(scores, [by_path[match["path"]] for match in result["matches"]], atol=1e-5)
    assert np.ptp(scores) > 0.01  # the check above means something: the recordings are told apart
    # The numpy engine and faiss give the same answer (faiss when installed; asking for it without is one line).
    try:
        import faiss  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install faiss-cpu"):
            EmbeddingIndex(index.paths, index.vectors, backend="faiss")
    else:
        assert index.backend == "faiss"
    vectors32 = np.stack([embedder(query)["embedding"] for query in queries])
    by_numpy = EmbeddingIndex(index.paths, index.vectors, backend="numpy").search(vectors32, 5)
    by_default = index.search(vectors32, 5)
    assert [[m["path"] for m in row] for row in by_numpy] == [[m["path"] for m in row] for row in by_default]
    np.testing.assert_allclose([[m["score"] for m in row] for row in by_numpy],
                               [[m["score"] for m in row] for row in by_default], atol=1e-6)


def test_parts_shards_and_the_npz_answer_as_the_parquet_does(corpus, tmp_path):
    table = pq.read_table(corpus.root / "old-emb.parquet")
    # A sharded run's files side by side (OUT-0000I-of-0000N.parquet), the second with an error column set on a
    # recording that failed (no embedding), as corpus runs write them.
    rest = table.slice(8)
    failed = pa.Table.from_pylist([{"path": "unreadable.wav"}], schema=rest.schema)
    rest = pa.concat_tables([rest, failed])
    rest = rest.append_column("error", pa.array([None] * (rest.num_rows - 1) + ["cannot decode"], pa.string()))
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(table.slice(0, 8), parts / "emb-00000-of-00002.parquet")
    pq.write_table(rest, parts / "emb-00001-of-00002.parquet")
    queries = [str(corpus.unheard), str(corpus.clips / "seven_en.wav")]
    expected = search_audio(queries, corpus.root / "emb.parquet", model=corpus.model, top_k=6)
    for source in (parts, parts / "emb.parquet", corpus.root / "emb.npz", corpus.root / "old-emb.npz"):
        index = EmbeddingIndex.load(source)
        assert sorted(index.paths) == corpus.files  # the failed row left out, and counted
        assert index.skipped == (1 if source.parent == parts or source == parts else 0)
        results = search_audio(queries, index, model=corpus.model, top_k=6)
        for got, want in zip(results, expected, strict=True):
            assert [m["path"] for m in got["matches"]] == [m["path"] for m in want["matches"]]
            np.testing.assert_allclose([m["score"] for m in got["matches"]], [m["score"] for m in want["matches"]],
                                       atol=1e-6)
    # A shard missing is named; a path embedded twice (a run's parts after a file changed) keeps its last row.
    (parts / "emb-00001-of-00002.parquet").rename(tmp_path / "away.parquet")
    with pytest.raises(ValueError, match="missing emb-00001-of-00002.parquet"):
        EmbeddingIndex.load(parts / "emb.parquet")
    column = table.schema.get_field_index("embedding")
    again = table.slice(0, 1).set_column(column, "embedding", table.slice(1, 1).column("embedding"))
    pq.write_table(again, parts / "emb-00001-of-00002.parquet")
    index = EmbeddingIndex.load(parts)
    assert len(index) == 8 and index.paths.count(table["path"][0].as_py()) == 1
    np.testing.assert_allclose(index.vectors[index.paths.index(table["path"][0].as_py())],
                               index.vectors[index.paths.index(table["path"][1].as_py())], atol=1e-7)


def test_the_settings_in_the_metadata_choose_the_model_and_layers(corpus, tmp_path):
    table = pq.read_table(corpus.root / "layered.parquet")
    settings = {"model": str(corpus.model), "pool": "cls_dist", "layers": [0, 2], "hop": None,
                "pad_to_max_length": None}
    pq.write_table(table.replace_schema_metadata({b"ast_hf": json.dumps(settings)}), tmp_path / "layered.parquet")
    index = EmbeddingIndex.load(tmp_path / "layered.parquet")
    assert index.settings == settings and index.dimension == 2 * 32
    query = str(corpus.clips / "yes_en+f3.wav")
    [result] = search_audio([query], index, top_k=2)  # no model=, no layer=: both from the metadata
    assert result["matches"][0]["path"] == query
    assert result["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_the_command_prints_a_table_and_json(corpus, capsys):
    query = str(corpus.clips / "water_en.wav")
    index = str(corpus.root / "emb.parquet")
    assert search_command([query, "--index", index, "--model", str(corpus.model), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["query", "rank", "score", "path"] and len(lines) == 3
    assert lines[1].split()[:3] == [query, "1", "1.0000"] and lines[1].split()[3] == query
    assert lines[2].split()[1] == "2"
    # A query that cannot be decoded is one line naming it; the other is still answered (exit status 1).
    status = search_command([str(corpus.broken), query, "--index", index, "--model", str(corpus.model), "--json",
                             "--top-k", "3"])
    captured = capsys.readouterr()
    assert status == 1
    assert [line for line in captured.err.splitlines() if "error" in line] == [
        next(line for line in captured.err.splitlines() if str(corpus.broken) in line)]
    results = json.loads(captured.out)
    assert [result["query"] for result in results] == [str(corpus.broken), query]
    assert "error" in results[0] and [m["path"] for m in results[1]["matches"]][0] == query
    if not cli_has_search():
        pytest.skip("`search` is not wired into ast_hf.cli yet (add_search_parser(commands) in build_parser)")
    assert cli.main(["search", query, "--index", index, "--model", str(corpus.model), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[3] == query


def test_errors_say_what_is_wrong(corpus, tmp_path, capsys):
    from ast_hf.cli import CommandError

    query = str(corpus.clips / "yes_en.wav")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        EmbeddingIndex.load(tmp_path / "missing.parquet")
    with pytest.raises(CommandError, match=r"--index .*missing.parquet: .*no such file"):
        search_command([query, "--index", str(tmp_path / "missing.parquet"), "--model", str(corpus.model)])
    (tmp_path / "notes.npz").write_text("not numpy")
    with pytest.raises(ValueError, match="notes.npz: cannot read it as a .npz"):
        EmbeddingIndex.load(tmp_path / "notes.npz")
    # An index of --layer 0 2 (64 values) searched with the default layer (32 values): an older file that does not
    # say so, or a --layer given against the stored one (a note says so, then the sizes disagree).
    with pytest.raises(ValueError, match=r"query vectors have 32 values but the index's have 64.*--layer"):
        search_audio(query, corpus.root / "old-layered.parquet", model=corpus.model)
    with pytest.raises(CommandError, match="32 values but the index's have 64"):
        search_command([query, "--index", str(corpus.root / "old-layered.parquet"), "--model", str(corpus.model)])
    layered = tmp_path / "layered.parquet"
    table = pq.read_table(corpus.root / "old-layered.parquet")
    pq.write_table(table.replace_schema_metadata({b"ast_hf": json.dumps({"model": str(corpus.model),
                                                                          "layers": [0, 2]})}), layered)
    capsys.readouterr()
    with pytest.raises(CommandError, match="32 values but the index's have 64"):
        search_command([query, "--index", str(layered), "--layer", "-1"])
    assert "note: layers [2] given, but the index was embedded with layers [0, 2]" in capsys.readouterr().err
    assert search_command([query, "--index", str(corpus.root / "old-layered.parquet"), "--model", str(corpus.model),
                           "--layer", "0", "2", "--top-k", "1"]) == 0
    capsys.readouterr()
    # No model: neither given nor stored with the index.
    with pytest.raises(ValueError, match="pass --model"):
        search_audio(query, corpus.root / "old-emb.npz")
    with pytest.raises(CommandError, match=r"pass --model .*--pool and --layer"):
        search_command([query, "--index", str(corpus.root / "old-emb.parquet")])
    if cli_has_search():
        assert cli.main(["search", query, "--index", str(corpus.root / "old-emb.parquet")]) == 2
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("ast-hf search: error: --index") and "--model" in errors[0]
