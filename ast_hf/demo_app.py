"""A local web demo of an AST audio tagger (Gradio), like the demo pages people put next to Hub models: upload or
record a clip, press Submit, and see the labels of the whole recording, the timeline (spectrogram over the label-score
heat map) and a table of segments. Everything shown comes from the "audio-tagging" pipeline (`ast_hf.tagging`).

    from ast_hf.demo_app import launch
    launch("path/to/checkpoint")            # serves http://127.0.0.1:7860 until interrupted

Needs gradio and matplotlib (`pip install 'ast_hf[demo]'`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

try:
    import gradio as gr
    import matplotlib  # noqa: F401  (plot_timeline draws with it)
except ImportError as error:
    missing = error.name or "gradio and matplotlib"
    raise ImportError(f"The web demo needs {missing}, which is not installed: pip install 'ast_hf[demo]' (gradio and "
                      "matplotlib).", name=error.name) from error

DESCRIPTION = """\
Upload a recording (WAV, FLAC, Ogg, MP3, ...) or record one with the microphone, then press **Submit**.
The model scores the whole recording (the top {top_k} labels on the right) and every segment of it: the timeline
shows the spectrogram over each label's score in time, and the table lists each segment's best label.
"""


def load_tagger(model: Any):
    """The "audio-tagging" pipeline of `model`: a model directory or Hub id (str or Path), or a pipeline already
    built, returned as it is."""
    from transformers import Pipeline, pipeline

    import ast_hf.tagging  # noqa: F401  (registers the "audio-tagging" task)

    if isinstance(model, Pipeline):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model is a {type(model).__name__}; pass a model directory or Hub id, or a pipeline built "
                        "with transformers.pipeline('audio-tagging', model=...).")
    return pipeline("audio-tagging", model=str(model))


def _model_name(model: Any, tagger) -> str:
    """The name the page shows: a Hub id as it is, a local directory by its folder name."""
    name = str(model) if isinstance(model, (str, os.PathLike)) else str(tagger.model.name_or_path)
    return Path(name).name if os.path.isdir(name) else name


def _timeline_image(plot_timeline, audio_path: str, result: dict[str, Any], title: str, extractor):
    """The timeline of `result` as a PIL image. Drawn through a PNG file, for which plot_timeline uses matplotlib's
    Agg backend: Gradio calls the handler from a worker thread, where a desktop's GUI backend must not draw."""
    import matplotlib.pyplot as plt
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="ast_demo_") as folder:
        png = os.path.join(folder, "timeline.png")
        figure = plot_timeline(audio_path, result, path=png, title=title, extractor=extractor)
        plt.close(figure)
        with Image.open(png) as image:
            return image.convert("RGB")  # a copy in memory, before the folder goes


def _check_upload(audio_path: str | None) -> Path:
    """The uploaded file, or a gr.Error the page shows when there is none or it is empty."""
    if not audio_path:
        raise gr.Error("No audio: upload a file or record with the microphone, then press Submit.")
    path = Path(audio_path)
    if not path.is_file():
        raise gr.Error(f"The upload {path.name!r} did not reach the server; upload it again.")
    if path.stat().st_size == 0:
        raise gr.Error(f"{path.name!r} is empty (0 bytes); upload a recording with sound in it.")
    return path


def build_demo(model: Any, top_k: int = 5, hop: float | None = None, examples: list[str] | None = None,
               pad_to_max_length: bool | None = None):
    """The demo page (a gradio.Blocks) of `model`: a model directory or Hub id, or an "audio-tagging" pipeline.

    top_k: labels shown for the whole recording. hop: seconds between segment starts (None: the pipeline's default).
    examples: audio files offered as examples under the input. pad_to_max_length: the input convention of the
    pipeline (True: short windows padded to the model's length, False: run at their own length with a mask; None:
    the checkpoint's, from its preprocessor_config.json).
    """
    from ast_hf.audio_io import AudioReadError
    from ast_hf.tagging import plot_timeline

    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k={top_k!r}; pass a positive number of labels to show, e.g. top_k=5.")
    if hop is not None and not hop > 0:
        raise ValueError(f"hop={hop!r}; pass a positive number of seconds between segments, or None for the "
                         "pipeline's default.")
    if pad_to_max_length is not None and not isinstance(pad_to_max_length, bool):
        raise TypeError(f"pad_to_max_length={pad_to_max_length!r}; pass True, False or None (the checkpoint's).")
    tagger = load_tagger(model)
    name = _model_name(model, tagger)
    # Passed only when set, so that the page follows the checkpoint's convention by default.
    options = {"top_k": top_k, "hop": hop}
    if pad_to_max_length is not None:
        options["pad_to_max_length"] = pad_to_max_length

    def tag(audio_path: str | None):
        path = _check_upload(audio_path)
        try:
            result = tagger(str(path), **options)
            timeline_image = _timeline_image(plot_timeline, str(path), result, f"{name}: {path.name}",
                                             tagger.feature_extractor)
        except ImportError as error:  # a decoder or plotting package missing on the server: its one-line message
            raise gr.Error(str(error)) from error
        except (AudioReadError, ValueError, RuntimeError, OSError) as error:
            # Gradio keeps the upload under a temporary folder; the user knows the file by its name.
            message = str(error).replace(str(path), path.name).replace(str(path.parent) + os.sep, "")
            message = message.removeprefix(f"{path.name}: ")  # the file is named once, in front
            raise gr.Error(f"Could not tag {path.name!r}: {message}") from error
        clip = {entry["label"]: entry["score"] for entry in result["clip"]}
        segments = [[round(segment["start"], 2), round(segment["end"], 2), segment["labels"][0]["label"],
                     round(segment["labels"][0]["score"], 3)] for segment in result["segments"]]
        return clip, timeline_image, segments

    with gr.Blocks(title=f"Audio tagging: {name}", analytics_enabled=False) as demo:
        gr.Markdown(f"# Audio tagging with `{name}`")
        where = str(tagger.model.name_or_path)
        source = f"local checkpoint `{where}`" if os.path.isdir(where) else (
            f"[{name}](https://huggingface.co/{name}) on the Hugging Face Hub")
        gr.Markdown(DESCRIPTION.format(top_k=top_k) + f"\nModel: {source}, an Audio Spectrogram Transformer "
                    "([Gong et al., 2021](https://arxiv.org/abs/2104.01778)).")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None, label="Audio",
                                 elem_id="audio-input")
                with gr.Row():
                    clear = gr.ClearButton(value="Clear", elem_id="clear-button")
                    submit = gr.Button("Submit", variant="primary", elem_id="submit-button")
                if examples:
                    gr.Examples(examples=[[str(example)] for example in examples], inputs=audio,
                                cache_examples=False)
            with gr.Column():
                labels = gr.Label(num_top_classes=top_k, label="Labels of the whole recording", elem_id="clip-labels")
        timeline = gr.Image(type="pil", label="Timeline: spectrogram and label scores", interactive=False,
                            elem_id="timeline")
        table = gr.Dataframe(headers=["start (s)", "end (s)", "top label", "score"],
                             datatype=["number", "number", "str", "number"], label="Segments", interactive=False,
                             elem_id="segments")
        clear.add([audio, labels, timeline, table])
        submit.click(tag, inputs=audio, outputs=[labels, timeline, table], api_name="tag")
    demo.tagger, demo.model_name = tagger, name  # the pipeline behind the page and the name it shows
    return demo


def launch(model: Any, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **kw):
    """Serve the demo of `model` (see build_demo) on http://HOST:PORT and block until interrupted.

    port None: Gradio's first free port from 7860. share: also a public gradio.live link. `top_k`, `hop`,
    `examples` and `pad_to_max_length` in kw go to build_demo, the rest to gradio.Blocks.launch; with
    prevent_thread_lock=True it returns the running demo instead of blocking (close it with demo.close()).
    """
    demo = build_demo(model, **{key: kw.pop(key) for key in ("top_k", "hop", "examples", "pad_to_max_length")
                                if key in kw})
    prevent_thread_lock = kw.pop("prevent_thread_lock", False)
    kw.setdefault("quiet", True)  # the URL is printed below, once
    _, local_url, share_url = demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                                          **kw)
    public = f" (public link: {share_url})" if share_url else ""
    print(f"AST demo of {demo.model_name} running on {local_url}{public}", flush=True)
    if prevent_thread_lock:
        return demo
    try:
        demo.block_thread()
    finally:
        demo.close()
    return demo


__all__ = ["build_demo", "launch", "load_tagger"]
