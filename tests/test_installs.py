"""What each install runs, and what a missing piece says.

The core install (`pip install ast_hf`, setup.cfg's install_requires) is rebuilt here as a folder that links only the
distributions of install_requires and their own requirements, and the CLI runs on it in a Python that sees nothing
else (`python -I -S`): `ast-hf classify` tags a file, `--plot` and `demo` name what they lack. Packages of the
extras are made unimportable in the full environment with `sys.modules[name] = None` (what Python does for a
module that is not there: ImportError, and importlib.util.find_spec says None); FFmpeg's libraries are hidden in
a private mount namespace. Then scripts/setup.sh as a user who is not root, and the model card's usage snippet.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import ROOT, speak, tiny_model
from packaging.requirements import Requirement

import ast_hf


def core_requirements() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]


def distribution_closure(requirements: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that `pip install` of `requirements` brings: each requirement and, recursively,
    the requirements its metadata lists for this platform and for the extras asked of it."""
    found: dict[str, importlib.metadata.Distribution] = {}
    extras: dict[str, set[str]] = {}
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        key = requirement.name.lower().replace("_", "-")
        if key in found and set(requirement.extras) <= extras[key]:
            continue
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} (a requirement of the core install) is not installed here; run "
                        "bash scripts/setup.sh")
        found[key] = distribution
        extras.setdefault(key, set()).update(requirement.extras)
        for text in distribution.requires or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in {"", *extras[key]}):
                pending.append(needed)
    return found


def link_core_distributions(site: Path) -> Path:
    """Fill `site` with links to the top-level packages (and metadata) of the core install's distributions: the
    site-packages of `pip install ast_hf` on this machine, ast_hf itself left out."""
    site.mkdir(parents=True, exist_ok=True)
    for distribution in distribution_closure(core_requirements()).values():
        base = Path(distribution.locate_file(""))
        for top in {Path(name).parts[0] for name in distribution.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth") or (site / top).exists():
                continue  # scripts in bin/, and .pth hooks (an editable install's) that would add other paths
            if (base / top).exists():
                (site / top).symlink_to(base / top)
    return site


@pytest.fixture(scope="module")
def core_site(tmp_path_factory) -> Path:
    """The core install's packages and a link to this checkout's ast_hf."""
    site = link_core_distributions(tmp_path_factory.mktemp("core_site"))
    (site / "ast_hf").symlink_to(ROOT / "ast_hf")
    return site


def run_cli(args: list, site: Path | None = None, unimportable: tuple[str, ...] = (), cwd: Path | None = None,
            command: str = "from ast_hf.cli import main; sys.exit(main())") -> subprocess.CompletedProcess:
    """`ast-hf ARGS` in a fresh Python: the full environment, or only `site` (`python -I -S`: no site-packages, no
    PYTHONPATH); the packages in `unimportable` absent."""
    prelude = "import sys; "
    if site is not None:
        prelude += f"sys.path[:0] = [{str(site)!r}]; "
    prelude += "".join(f"sys.modules[{name!r}] = None; " for name in unimportable)
    python = [sys.executable, "-I", "-S"] if site is not None else [sys.executable]
    return subprocess.run([*python, "-c", prelude + command, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def assert_one_line(done: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit status 2 and a single stderr line holding each of `expected`, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    for text in expected:
        assert text in done.stderr, done.stderr
    return done.stderr.strip()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """A spoken word the word model knows, as a WAV file."""
    path = tmp_path_factory.mktemp("spoken") / "up.wav"
    clip = np.concatenate([np.zeros(3200, np.float32), speak("up", "en", 165, 50), np.zeros(3200, np.float32)])
    soundfile.write(path, clip, 16000)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The built wheel and sdist

# What a source distribution is built from: the files setup.cfg reads and the package.
PACKAGE_SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "ast_hf")


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_clean_venv(tmp_path, word_model, spoken):
    """`python -m build` makes a wheel and an sdist that `twine check` accepts; the wheel, installed with pip (not
    editable) into a fresh virtual environment whose only other packages are the core install's, gives `ast-hf`,
    `import ast_hf` from the venv, its package data, the audio-tagging pipeline on a file, and saved models that
    carry every file their remote code imports."""
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGE_SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("ast_hf-*.whl"))
    assert wheel.name.startswith(f"ast_hf-{ast_hf.__version__}-") and next(dist.glob("ast_hf-*.tar.gz"))
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 2, checked.stdout + checked.stderr

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--disable-pip-version-check", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert (site / "ast_hf" / "data" / "esc50_class_labels_indices.csv").is_file()
    deps = link_core_distributions(tmp_path / "deps")  # the dependencies pip would have installed
    (site / "core_dependencies.pth").write_text(f"{deps}\n")

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    help_text = subprocess.run([str(venv / "bin" / "ast-hf"), "--help"], capture_output=True, text=True, env=env,
                               cwd=tmp_path, timeout=300)
    assert help_text.returncode == 0 and "classify" in help_text.stdout, help_text.stderr[-3000:]
    script = f"""
import json, sys
import ast_hf
from ast_hf.presets import dataset_labels
from transformers import pipeline
tagger = pipeline("audio-tagging", model={str(word_model)!r})
result = tagger({str(spoken)!r}, top_k=2)
model = ast_hf.ASTForAudioClassification.from_pretrained({str(word_model)!r})
model.save_pretrained("saved")
import os
print(json.dumps({{"file": ast_hf.__file__, "version": ast_hf.__version__, "esc50": len(dataset_labels("esc50")),
                  "top": result["clip"][0]["label"], "saved": sorted(os.listdir("saved"))}}))
"""
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["file"].startswith(str(site)) and facts["version"] == ast_hf.__version__
    assert facts["esc50"] == 50 and facts["top"] == "up"
    for needed in ("configuration_ast.py", "modeling_ast.py", "feature_extraction_ast.py", "kaldi_fbank.py",
                   "patch_grid.py", "model_inputs.py", "staging.py", "model.safetensors", "config.json"):
        assert needed in facts["saved"], (needed, facts["saved"])


# ---------------------------------------------------------------------------------------------------------------
# The core install


def test_core_install_is_what_setup_cfg_says(core_site):
    assert "torchcodec" in {Requirement(text).name for text in core_requirements()}
    assert (core_site / "torchcodec").exists() and (core_site / "transformers").exists()
    for extra_only in ("gradio", "matplotlib", "datasets", "soundfile", "onnxruntime"):
        assert not (core_site / extra_only).exists(), extra_only


def test_core_install_classifies_a_file(core_site, word_model, spoken):
    """README's first command after installing: `ast-hf classify file.wav --model M`, on the core install only."""
    done = run_cli(["classify", spoken, "--model", word_model, "--top-k", "2"], site=core_site)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["file", "duration", "top"] and lines[1].split()[3] == "up", done.stdout


def test_core_install_plot_and_demo_name_their_extra(core_site, word_model, spoken, tmp_path):
    done = run_cli(["classify", spoken, "--model", word_model, "--plot", tmp_path / "up.png"], site=core_site)
    assert_one_line(done, "--plot", "matplotlib", "pip install matplotlib")
    assert done.stdout == "" and not (tmp_path / "up.png").exists()
    done = run_cli(["demo", "--model", word_model], site=core_site)
    assert_one_line(done, "gradio", "pip install 'ast_hf[demo]'")


# ---------------------------------------------------------------------------------------------------------------
# Missing pieces in the full environment


def test_classify_without_torchcodec_names_it(word_model, spoken):
    done = run_cli(["classify", spoken, "--model", word_model], unimportable=("torchcodec",))
    assert_one_line(done, "torchcodec", "pip install torchcodec", "apt-get install ffmpeg")


def test_plot_without_matplotlib_names_it(word_model, spoken, tmp_path):
    done = run_cli(["classify", spoken, "--model", word_model, "--plot", tmp_path / "up.png"],
                   unimportable=("matplotlib",))
    assert_one_line(done, "matplotlib", "pip install matplotlib")


@pytest.mark.slow
def test_demo_without_gradio_or_matplotlib_names_it(word_model):
    pytest.importorskip("gradio", reason="the demo's message for a missing matplotlib needs gradio installed")
    for missing in ("gradio", "matplotlib"):
        done = run_cli(["demo", "--model", word_model], unimportable=(missing,))
        assert_one_line(done, f"needs {missing}", "pip install 'ast_hf[demo]'")


def test_demo_upload_without_torchcodec_is_a_message_on_the_page(word_model, spoken):
    """The page's handler (what the Submit button runs) gives a gr.Error naming torchcodec, not a traceback."""
    pytest.importorskip("gradio", reason="the web demo needs gradio (pip install 'ast_hf[demo]')")
    code = ("import gradio as gr; from ast_hf.demo_app import build_demo; "
            "demo = build_demo(sys.argv[1]); "
            "tag = next(f.fn for f in demo.fns.values() if f.api_name == 'tag'); "
            "exec('try:\\n tag(sys.argv[2])\\nexcept gr.Error as error:\\n print(\"gr.Error:\", error.message)')")
    done = run_cli([word_model, spoken], unimportable=("torchcodec",), command=code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("gr.Error: ") and "pip install torchcodec" in done.stdout, done.stdout


def hidden_library() -> str | None:
    """The file of FFmpeg's libavutil that torchcodec loads here, or None."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    paths = [line.split("=>")[-1].strip() for line in listing.splitlines() if "libavutil.so" in line]
    return os.path.realpath(paths[0]) if paths else None


@pytest.mark.slow
def test_classify_and_demo_without_ffmpeg_name_it(word_model, spoken):
    """FFmpeg's libavutil replaced by an empty file in a private mount namespace (this process and the machine keep
    theirs): torchcodec cannot load its core, and the command says to install FFmpeg."""
    library = hidden_library()
    if os.geteuid() != 0 or not shutil.which("unshare") or library is None:
        pytest.skip("hiding FFmpeg needs root, unshare (util-linux) and FFmpeg's libavutil found by ldconfig")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    for args in (["classify", spoken, "--model", word_model], ["demo", "--model", word_model]):
        command = [sys.executable, "-m", "ast_hf.cli", *map(str, args)]
        done = subprocess.run(["unshare", "--mount", "sh", "-c", 'mount --bind /dev/null "$0" && exec "$@"', library,
                               *command], capture_output=True, text=True, timeout=300)
        assert_one_line(done, "FFmpeg", "apt-get install ffmpeg", "pip install -U torchcodec")


# ---------------------------------------------------------------------------------------------------------------
# scripts/setup.sh as a user who is not root


@pytest.fixture()
def user_copy():
    """scripts/setup.sh copied to a folder anyone may read, with a bin/ to be the PATH; and the user to run it as
    (nobody). Skipped where this process cannot switch user."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip("running setup.sh as another user needs root and runuser")
    try:
        import pwd

        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run setup.sh as")
    with tempfile.TemporaryDirectory(prefix="ast_setup_") as folder:
        root = Path(folder)
        (root / "scripts").mkdir()
        (root / "bin").mkdir()
        shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
        for path in (root, root / "scripts", root / "bin"):
            path.chmod(0o755)
        yield root


def run_setup_as_user(root: Path, programs: tuple[str, ...], skip_pip: bool) -> subprocess.CompletedProcess:
    """setup.sh as user nobody with only `programs` (links to this machine's) on the PATH."""
    for program in ("dirname", "id", *programs):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed here")
        (root / "bin" / program).unlink(missing_ok=True)
        (root / "bin" / program).symlink_to(shutil.which(program))
    env = [f"PATH={root / 'bin'}", "HOME=/tmp", *(["SETUP_SKIP_PIP=1"] if skip_pip else [])]
    return subprocess.run(["runuser", "-u", "nobody", "--", "env", "-i", *env, "/bin/bash",
                           str(root / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60)


def test_setup_as_user_without_the_browser_warns_and_goes_on(user_copy):
    done = run_setup_as_user(user_copy, ("espeak-ng", "sox", "ffmpeg"), skip_pip=True)
    assert done.returncode == 0, done.stderr
    assert "warning: chromium missing: the browser test (tests/test_demo.py) will be skipped" in done.stderr
    assert "warning: chromium-driver missing" in done.stderr and "pip step skipped" in done.stderr


def test_setup_as_user_without_a_required_program_stops_with_the_apt_command(user_copy):
    done = run_setup_as_user(user_copy, ("espeak-ng", "ffmpeg"), skip_pip=True)
    assert done.returncode == 1
    assert "sox missing" in done.stderr and "sudo apt-get install -y sox" in done.stderr, done.stderr


def test_setup_as_user_with_a_system_python_says_to_make_a_venv(user_copy):
    """Debian's /usr/bin/python3 is externally managed (PEP 668): pip refuses to install into it, --user too."""
    system_python = Path("/usr/bin/python3")
    marker = subprocess.run([str(system_python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True).stdout.strip() if system_python.exists() else ""
    if not marker or not (Path(marker) / "EXTERNALLY-MANAGED").exists():
        pytest.skip("needs an externally managed /usr/bin/python3 (Debian 12 and later)")
    (user_copy / "bin" / "python3").symlink_to(system_python)
    done = run_setup_as_user(user_copy, ("espeak-ng", "sox", "ffmpeg"), skip_pip=False)
    assert done.returncode == 1
    assert "PEP 668" in done.stderr and "python3 -m venv" in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------------------------
# The model card's usage snippet


def card_usage(folder: Path) -> str:
    """The model= value of the card's `pipeline(...)` line."""
    line = next(line for line in (folder / "README.md").read_text().splitlines() if "pipeline(" in line)
    return json.loads(line.split("model=", 1)[1].rstrip(")"))


def saved_model(folder: Path) -> Path:
    tiny_model().save_pretrained(folder)
    ast_hf.ASTFeatureExtractor(max_length=128).save_pretrained(folder)
    return folder


def test_card_of_a_local_model_loads_it_from_anywhere(tmp_path):
    from transformers import pipeline

    from ast_hf.training.publishing import write_model_card

    out = saved_model(tmp_path / "outputs" / "espeak_commands")
    write_model_card(out, out.name, {"eval_accuracy": 0.5}, "espeak-ng commands", {"model_size": "tiny"}, None)
    card = (out / "README.md").read_text()
    assert "trained from scratch (model size tiny) with ast_hf" in card and "fine-tuned" not in card
    reference = card_usage(out)
    assert reference == str(out.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        classifier = pipeline("audio-classification", model=reference)
    finally:
        os.chdir(cwd)
    assert classifier(np.zeros(16000, np.float32), top_k=1)[0]["label"].startswith("LABEL_")


def test_card_of_a_fine_tuned_model_names_its_base_and_hub_id(tmp_path):
    from ast_hf.training.publishing import write_model_card

    out = tmp_path / "espeak_commands"
    out.mkdir()
    write_model_card(out, "someone/espeak-commands", {}, "espeak-ng commands",
                     {"model_name_or_path": "MIT/ast-finetuned-audioset-10-10-0.4593"},
                     "MIT/ast-finetuned-audioset-10-10-0.4593")
    card = (out / "README.md").read_text()
    assert "fine-tuned from `MIT/ast-finetuned-audioset-10-10-0.4593` with ast_hf" in card
    assert "from scratch" not in card and card_usage(out) == "someone/espeak-commands"
    write_model_card(out, out.name, {}, "espeak-ng commands", {"deit_name_or_path": "facebook/deit-base"},
                     "facebook/deit-base", hub_model_id="someone/x")
    assert card_usage(out) == "someone/x" and "fine-tuned from `facebook/deit-base`" in (out / "README.md").read_text()


def test_pushed_card_loads_the_repo_the_push_created(tmp_path):
    """--push_to_hub without --hub_model_id pushes to OWNER/FOLDER: the card on the Hub names that repo (a Hub API
    served on 127.0.0.1, tests/fake_hub.py; the push in a fresh process that reads HF_ENDPOINT)."""
    from fake_hub import serve

    from ast_hf.training.publishing import write_model_card

    out = saved_model(tmp_path / "espeak_commands")
    write_model_card(out, out.name, {}, "espeak-ng commands", {"model_size": "tiny"}, None)
    assert card_usage(out) == str(out.resolve())
    server, url = serve(tmp_path / "hub")
    env = {**os.environ, "HF_ENDPOINT": url, "HF_TOKEN": "hf_local_test", "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf_home")}
    code = ("import sys; from ast_hf.training.publishing import push_output_dir; "
            "push_output_dir(sys.argv[1], 'espeak_commands')")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True,
                              timeout=120)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    assert card_usage(tmp_path / "hub" / "tester" / "espeak_commands") == "tester/espeak_commands"
