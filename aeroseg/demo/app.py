"""``aeroseg-demo`` / ``tools/demo_app.py``: a web page to segment an image into any class names.

    aeroseg-demo --config-file configs/demo/tiny_cpu.yaml MODEL.WEIGHTS output/tiny_cpu/model_final.pth
    # then open http://127.0.0.1:7860

Upload an image (PNG, JPEG or GeoTIFF, any size up to ``--max-pixels``), type classes
(comma-separated, synonyms joined by ``|`` as in ``aeroseg-predict --classes``, or pick a
dataset's vocabulary) and press Segment: the page shows the overlay with its legend, each
class's share of the pixels, and offers the labels (a GeoTIFF with the input's CRS and a colour
table when the input is one, else a PNG) and the classes JSON. Segmentation runs the sliding
windows of ``aeroseg-predict`` (``--tile``, ``--overlap``, ``--batch-size``). The last image's
window encodings are kept (``--cache-mb``), so a new class list on the same image reruns only
the text encoder and the correlation head. Needs Gradio: ``pip install "aeroseg[demo]"``.
"""
import argparse
import html
import logging
import os
import sys
from typing import Dict, List, Optional

from ..utils.errors import AerOSegError, describe_exception, one_line
from .session import DEFAULT_MAX_PIXELS, DemoInputError, DemoResult, DemoSession

__all__ = ["PRESETS", "build_app", "launch", "main", "parse_args", "preset_classes"]

logger = logging.getLogger("aeroseg.demo")

INSTALL_HINT = 'pip install "aeroseg[demo]"'
SEGMENTING = "Segmenting…"  # the status line while a request runs


def _presets() -> Dict[str, List[str]]:
    from ..data.datasets.builtin_meta import DLRSD_CLASSES, ISAID_CLASSES, OEM_CLASSES
    from ..data.datasets.synthetic import SYNTHETIC_CLASSES

    return {
        f"iSAID ({len(ISAID_CLASSES)} classes)": ISAID_CLASSES,
        f"DLRSD ({len(DLRSD_CLASSES)} classes)": DLRSD_CLASSES,
        f"OpenEarthMap ({len(OEM_CLASSES)} classes)": OEM_CLASSES,
        f"Synthetic demo ({len(SYNTHETIC_CLASSES)} classes)": SYNTHETIC_CLASSES,
    }


PRESETS = _presets()


def preset_classes(name: str) -> str:
    """The classes box's text for a preset (a dataset's vocabulary)."""
    return ", ".join(PRESETS[name])


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="aeroseg-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="the model's config (e.g. the training one)")
    p.add_argument("--port", type=int, default=7860, help="port of the page (default 7860)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--share", choices=("no", "yes"), default="no",
                   help="yes: also ask Gradio for a temporary public link (needs internet access)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest image (height x width) accepted (default {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--cache-mb", type=float, default=1024,
                   help="memory for the last image's window encodings, so that new classes on the same image "
                        "skip CLIP and SAM (default 1024; 0: off)")
    p.add_argument("--tile", type=int, default=None, help="window side in pixels (default: INPUT.CROP.SIZE)")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap, fraction of --tile")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's; 1 is often fastest on a busy machine)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth")
    return p.parse_args(argv)


def _import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    try:
        import gradio
    except ImportError:
        raise AerOSegError(f"the web demo needs Gradio, which is not installed: {INSTALL_HINT}") from None
    return gradio


def legend_html(result: Optional[DemoResult]) -> str:
    """The legend under the overlay: colour, class name (and synonyms), share of the pixels."""
    if result is None:
        return ""
    rows = []
    for name, group, colour, share in zip(result.names, result.groups, result.palette, result.shares):
        hex_colour = "#%02x%02x%02x" % tuple(int(c) for c in colour)
        synonyms = f' <span class="aeroseg-synonyms">({html.escape(" | ".join(group[1:]))})</span>' if group[1:] else ""
        rows.append(f'<li class="aeroseg-class"><span class="aeroseg-swatch" data-color="{hex_colour}" '
                    f'style="background:{hex_colour}"></span><span class="aeroseg-name">{html.escape(name)}</span>'
                    f'{synonyms} <span class="aeroseg-share">{100 * share:.1f}%</span></li>')
    return '<ul class="aeroseg-legend">' + "".join(rows) + "</ul>"


def shares_frame(result: DemoResult):
    import pandas as pd

    return pd.DataFrame({"class": result.names, "share (%)": [round(100 * s, 2) for s in result.shares]})


CSS = """
.aeroseg-legend {list-style: none; padding: 0; margin: 0; columns: 2;}
.aeroseg-class {display: flex; align-items: center; gap: 0.4em; margin: 0.15em 0;}
.aeroseg-swatch {display: inline-block; width: 1em; height: 1em; border: 1px solid #333; flex: none;}
.aeroseg-synonyms, .aeroseg-share {color: #666;}
"""


def build_app(session: DemoSession, title: str = "AerOSeg"):
    """The Gradio Blocks of the demo around ``session`` (not launched)."""
    gr = _import_gradio()

    def on_segment(image, classes, alpha, progress=gr.Progress()):
        def report(done, total):
            progress((done, total), desc="windows", unit="windows")

        empty = (None, "", None, None, None)
        try:
            result = session.segment(image, classes, alpha, progress=report)
        except DemoInputError as exc:
            return (*empty, f"**Error:** {html.escape(one_line(exc), quote=False)}", None)
        except Exception as exc:  # a bug: the message on the page, the traceback in the server's log
            logger.exception("segmentation failed")
            return (*empty, f"**Internal error** (the server's log has the details): "
                            f"{html.escape(describe_exception(exc, with_type=True), quote=False)}", None)
        colours = {n: "#%02x%02x%02x" % tuple(int(v) for v in c) for n, c in zip(result.names, result.palette)}
        chart = gr.BarPlot(value=shares_frame(result), color="class", color_map=colours, colors_in_legend=[])
        return (str(result.overlay_path), legend_html(result), chart, str(result.labels_path),
                str(result.classes_path), result.summary(), result)

    def on_opacity(alpha, result):
        if result is None:
            return gr.update()
        return session.overlay(result, alpha)

    with gr.Blocks(title=title, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {html.escape(title)}: open-vocabulary segmentation of aerial images\n"
            "Upload an image, type the classes to find (comma-separated; synonyms joined by `|`, e.g. "
            "`building|roof, road, swimming pool`), press **Segment**. Any class names work.")
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.File(label="Image (PNG, JPEG or GeoTIFF)", file_types=[".png", ".jpg", ".jpeg", ".tif",
                                                                               ".tiff", ".bmp"],
                                elem_id="aeroseg-image")
                preset = gr.Dropdown(choices=list(PRESETS), value=None, label="Vocabulary of a dataset (optional)",
                                     elem_id="aeroseg-preset")
                classes = gr.Textbox(value=session.default_classes, label="Classes", lines=2,
                                     placeholder="building|roof, road, swimming pool, tree", elem_id="aeroseg-classes")
                alpha = gr.Slider(0, 1, value=0.5, step=0.05, label="Opacity of the mask", elem_id="aeroseg-opacity")
                button = gr.Button("Segment", variant="primary", elem_id="aeroseg-segment")
                status = gr.Markdown(elem_id="aeroseg-status")
            with gr.Column(scale=3):
                overlay = gr.Image(label="Segmentation", type="filepath", format="png", interactive=False,
                                   height=420, elem_id="aeroseg-overlay")
                legend = gr.HTML(elem_id="aeroseg-legend")
                chart = gr.BarPlot(x="class", y="share (%)", title="Share of the image's pixels", sort="-y",
                                   elem_id="aeroseg-shares")
                with gr.Row():
                    labels_file = gr.File(label="Labels (class index per pixel)", interactive=False,
                                          elem_id="aeroseg-labels")
                    classes_file = gr.File(label="Classes (JSON)", interactive=False, elem_id="aeroseg-classes-json")
        state = gr.State(None)
        preset.change(lambda name: preset_classes(name) if name else gr.update(), preset, classes, api_name=False)
        button.click(lambda: SEGMENTING, None, status, queue=False, api_name=False).then(
            on_segment, [image, classes, alpha], [overlay, legend, chart, labels_file, classes_file, status, state],
            api_name="segment", concurrency_limit=1)
        alpha.release(on_opacity, [alpha, state], overlay, api_name=False, concurrency_limit=1)
    return app


def launch(app, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True):
    """Serve ``app`` (from :func:`build_app`) at ``http://host:port``; ``block=False`` returns at once
    (the server runs in a thread until ``app.close()``)."""
    app.queue(default_concurrency_limit=1)
    return app.launch(server_name=host, server_port=port, share=share, css=CSS, footer_links=[], quiet=not block,
                      prevent_thread_lock=not block)


def _build_session(args) -> DemoSession:
    import torch

    from ..inference.sliding_window import SlidingWindowPredictor
    from ..utils.cpu_allocator import configure_cpu_allocator

    if args.threads is not None:
        if args.threads < 1:
            raise AerOSegError(f"--threads {args.threads}: expected a number >= 1")
        torch.set_num_threads(args.threads)
    if args.max_pixels <= 0:
        raise AerOSegError(f"--max-pixels {args.max_pixels}: expected a number > 0")
    if args.cache_mb < 0:
        raise AerOSegError(f"--cache-mb {args.cache_mb}: expected a number >= 0")
    if not os.path.isfile(args.config_file):
        raise AerOSegError(f"config file {args.config_file} does not exist")
    try:
        predictor = SlidingWindowPredictor.from_config_file(
            args.config_file, opts=args.opts or [], overlap=args.overlap, batch_size=args.batch_size,
            cache_mb=args.cache_mb, **({"tile": args.tile} if args.tile else {}))
    except (KeyError, AssertionError) as exc:  # unknown key / odd override list from the config system
        raise AerOSegError(f"{args.config_file}: {one_line(str(exc).strip(chr(34)).strip(chr(39)))}") from None
    if predictor.model.device.type == "cpu":
        configure_cpu_allocator(predictor.cfg.CPU_ALLOCATOR)
    return DemoSession(predictor, max_pixels=args.max_pixels)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    session = None
    try:
        _import_gradio()  # before building the model: say what is missing at once
        session = _build_session(args)
        logger.info("open http://%s:%d in a browser (Ctrl+C stops the demo)", args.host, args.port)
        launch(build_app(session), args.host, args.port, share=args.share == "yes")
        return 0
    except (AerOSegError, ValueError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    sys.exit(main())
