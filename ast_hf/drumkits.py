"""A data set of real recorded drum and percussion hits, built from Debian's `hydrogen-drumkits` package: six
classes (kick, snare, tom, hihat, cymbal, percussion) taken from the instrument names of each kit's drumkit.xml,
and split by who recorded the kit, so that the evaluation clips come from drums, rooms, microphones and players
that never appear in training. It is the real-recording benchmark of the fine-tuning examples
(benchmarks/finetune_real.py): no download beyond the Debian package, no synthesis.

The clips keep their recorded form (WAV, FLAC or AIFF; 44.1 or 48 kHz; mono or stereo; 16 or 24 bit), trimmed to
`max_seconds`, so training reads them through the same decode-resample-downmix path as a user's own files. The
result is an `audiofolder` tree (train/<class>/..., validation/<class>/..., each with metadata.csv naming the kit,
its recording source and the instrument), written once to a cache folder and reused.

Licences of the kits (GPL-2, GPL-2+, CC-BY-3.0, CC-BY-SA-3.0) are in /usr/share/doc/hydrogen-drumkits/copyright;
the audio is built locally from the installed package and never committed or redistributed by ast_hf.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data_cache import default_cache_dir, staged_build, write_metadata

DRUMKITS_DIR = Path("/usr/share/hydrogen/data/drumkits")
CLASSES = ("kick", "snare", "tom", "hihat", "cymbal", "percussion")
# Instrument name -> class, first match wins (hi-hat before the generic "hat"/"bell" words, cymbals before "bell").
# Unmatched instruments (sticks, rim clicks, effects, whistles, finger snaps, glasses) are left out.
CLASS_PATTERNS = (
    ("hihat", r"hi-?hat|\bhh\b|\bhat\b"),
    ("cymbal", r"crash|ride|splash|china|cymbal"),
    ("kick", r"kick|bass ?drum|\bbd\b"),
    ("snare", r"snare"),
    ("tom", r"\btom"),
    ("percussion", r"clap|cowbell|tambourine|conga|bongo|agogo|cajon|clave|woodblock|maraca|shaker|djembe|sangban|"
                   r"dununba|kenkeni"),
)
# Who recorded each kit (drumkit.xml <author>, Debian's copyright file): kits of one source stay in one split.
KIT_SOURCES = {
    "BJA_Pacific": "Tanguay-Anderson",
    "ColomboAcousticDrumkit": "Guglielmetti",
    "ElectricEmpireKit": "ArtemioLabs",
    "HardElectro1": "ArtemioLabs",
    "VariBreaks": "ArtemioLabs",
    "ForzeeStereo": "Sadovnikov-Belokurov",
    "Gimme A Hand 1.0": "MacArthur",
    "The Black Pearl 1.0": "MacArthur",
    "Millo-Drums_v.1": "Emillo",
    "Millo_MultiLayered2": "Emillo",
    "Millo_MultiLayered3": "Emillo",
    "circAfrique v4": "Harney",
    "rumpf_kit_z01_h2": "Rumpf",
}
# Audiophob collects freesound clips under slot names that do not describe them (its "Kick" is a tom): left out.
EXCLUDED_KITS = ("Audiophob",)
EVAL_SOURCES = ("Sadovnikov-Belokurov", "Emillo")  # 216 of 571 clips; every class in both splits
AUDIO_SUFFIXES = (".wav", ".flac", ".aiff", ".aif")
VERSION = 1  # bump when the selection below changes, so that stale caches are not reused


@dataclass(frozen=True)
class DrumkitsSpec:
    """What to build: evaluation sources, clip length cap and the package version the clips come from."""

    eval_sources: tuple[str, ...] = EVAL_SOURCES
    max_seconds: float = 4.0
    version: int = field(default=VERSION)

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def instrument_class(name: str) -> str | None:
    """The class of a Hydrogen instrument name ("Snare Rimshot (Pearl ...)" -> "snare"), or None."""
    lowered = name.lower()
    return next((label for label, pattern in CLASS_PATTERNS if re.search(pattern, lowered)), None)


def read_kit(kit_dir: Path) -> list[dict[str, str]]:
    """One row per distinct sample file of a kit that names a known class: kit, source, instrument, file, label."""
    tree = ElementTree.parse(kit_dir / "drumkit.xml").getroot()
    namespace = re.match(r"\{.*\}", tree.tag)
    ns = namespace.group(0) if namespace else ""
    source = KIT_SOURCES.get(kit_dir.name) or (tree.findtext(ns + "author") or kit_dir.name).strip()
    rows, seen = [], set()
    for instrument in tree.iter(ns + "instrument"):
        name = (instrument.findtext(ns + "name") or "").strip()
        label = instrument_class(name)
        for element in instrument.iter(ns + "filename"):
            file_name = (element.text or "").strip()
            if (label is None or file_name in seen or "empty" in file_name.lower()
                    or not file_name.lower().endswith(AUDIO_SUFFIXES) or not (kit_dir / file_name).is_file()):
                continue
            seen.add(file_name)
            rows.append(dict(kit=kit_dir.name, source=source, instrument=name, file=file_name, label=label))
    return rows


def plan(source_dir: str | os.PathLike = DRUMKITS_DIR, spec: DrumkitsSpec | None = None) -> list[dict[str, str]]:
    """Every selected clip with its split: "validation" for kits of `spec.eval_sources`, "train" otherwise."""
    spec = spec or DrumkitsSpec()
    source_dir = Path(source_dir)
    if not (source_dir.is_dir() and any(source_dir.glob("*/drumkit.xml"))):
        raise FileNotFoundError(
            f"No Hydrogen drumkits under {source_dir}. Install the Debian package hydrogen-drumkits "
            "(`apt-get install hydrogen-drumkits`; scripts/setup.sh does it) or pass the folder that holds them.")
    rows = []
    for kit_dir in sorted(p.parent for p in source_dir.glob("*/drumkit.xml")):
        if kit_dir.name in EXCLUDED_KITS:
            continue
        for row in read_kit(kit_dir):
            row["split"] = "validation" if row["source"] in spec.eval_sources else "train"
            rows.append(row)
    return rows


def _copy_clip(source: Path, target: Path, max_seconds: float) -> bool:
    """Copy a recording in its own format, rate, channels and bit depth, cut to `max_seconds`; False when silent."""
    import soundfile

    info = soundfile.info(str(source))
    audio, rate = soundfile.read(str(source), frames=int(max_seconds * info.samplerate), always_2d=True,
                                 dtype="float32")
    if not np.abs(audio).max(initial=0.0) > 1e-4:
        return False
    soundfile.write(str(target), audio, rate, subtype=info.subtype, format=info.format)
    return True


def build_drumkits_dataset(spec: DrumkitsSpec | None = None, cache_dir: str | os.PathLike | None = None,
                           source_dir: str | os.PathLike = DRUMKITS_DIR, verbose: bool = True) -> Path:
    """Build the data set (or reuse the cached copy) and return its root: `root/train`, `root/validation`, each an
    audiofolder (`<class>/<kit>__<file>` + metadata.csv). Built in a temporary folder and renamed into place."""
    spec = spec or DrumkitsSpec()
    root = Path(cache_dir or default_cache_dir()) / f"drumkits_{spec.key()}"
    if (root / "spec.json").is_file():
        return root
    rows = plan(source_dir, spec)
    with staged_build(root, asdict(spec)) as staging:
        if verbose:
            print(f"copying {len(rows)} drum recordings from {source_dir} into {root} (once; cached afterwards)",
                  flush=True)
        kept: dict[str, list[dict[str, str]]] = {"train": [], "validation": []}
        for row in rows:
            stem, suffix = os.path.splitext(row["file"])
            name = f"{row['label']}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', row['kit'] + '__' + stem)}{suffix.lower()}"
            (staging / row["split"] / row["label"]).mkdir(parents=True, exist_ok=True)
            if _copy_clip(Path(source_dir) / row["kit"] / row["file"], staging / row["split"] / name,
                          spec.max_seconds):
                kept[row["split"]].append(dict(file_name=name, label=row["label"], kit=row["kit"],
                                               source=row["source"], instrument=row["instrument"]))
        for split, metadata in kept.items():
            write_metadata(staging / split, metadata)
    return root


__all__ = ["CLASSES", "DrumkitsSpec", "build_drumkits_dataset", "instrument_class", "plan"]
