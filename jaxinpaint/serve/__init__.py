"""``jaxinpaint serve``: a local web page to paint a mask over a photo and inpaint it, and the JSON/HTTP endpoint
behind it (``python -m jaxinpaint.serve --model=SOURCE``).

The page (``page.html``, one file with its script and style inline: it loads nothing from elsewhere and works
offline) opens an image, paints or erases the mask with a brush of chosen size, runs any loaded model or
per-image method, compares before and after with a slider, keeps editing the result, and downloads the PNG.

Endpoints (Flask, served by waitress; bound to 127.0.0.1 unless ``--host`` says otherwise):

* ``GET /``: the page;
* ``GET /api/models``: ``{"models": [...], "methods": [...], "default": name, "hd_strategies": [...],
  "hd_strategy": the page's initial choice, "max_upload_bytes": n, "max_pixels": n}``;
* ``POST /api/inpaint``: multipart form with the files ``image`` and ``mask`` (any non-zero mask pixel is a hole)
  and optional fields ``model`` (a name from ``/api/models``; default the first ``--model``) and
  ``hd_strategy`` (``original``, ``crop``, ``resize``); answers ``image/png`` (headers ``X-Jaxinpaint-Model``,
  ``X-Jaxinpaint-Seconds``), or with ``Accept: application/json`` ``{"image": "<base64 PNG>", "model",
  "seconds", "width", "height"}``. Scripts call it too::

      curl -F image=@photo.jpg -F mask=@mask.png http://127.0.0.1:8080/api/inpaint -o result.png

Errors are JSON ``{"error": "..."}``: 400 (a missing field, an unknown model, a mask of another size), 413 (an
upload over ``--max_upload_mb`` or a photo over ``--max_megapixels``), 415 (a file that is not an image), 500
(the model failed). Pixels outside the hole are the uploaded image's (8-bit RGB, EXIF orientation applied, alpha
composited over white, as ``jaxinpaint predict`` reads files), byte for byte.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.resources
import io
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger("jaxinpaint.serve")

DEFAULT_MAX_UPLOAD_MB = 30.0
DEFAULT_MAX_MEGAPIXELS = 40.0


class RequestError(Exception):
    """A request the server refuses; ``status`` is the HTTP status (400, 413, 415)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class ModelEntry:
    """A model the page can pick: a trained source given with ``--model`` or a per-image method."""

    name: str
    source: str
    kind: str  # 'model' or 'method'
    inpainter: Any = None


class Models:
    """The models and per-image methods a server offers, loaded on first use and kept (one lock per entry).

    ``sources`` maps page names to anything ``jaxinpaint.load`` takes; every registered per-image method
    (``jaxinpaint.systems.names('solver')``) is offered too, a method that needs a trained model (LaMa's
    refinement) getting the first model's source.
    """

    def __init__(self, sources: Mapping[str, str], *, methods: Sequence[str] | None = None, seed: int = 0):
        from jaxinpaint import systems

        self.entries: dict[str, ModelEntry] = {n: ModelEntry(n, s, "model") for n, s in sources.items()}
        for name in systems.names("solver") if methods is None else methods:
            if name not in self.entries:
                self.entries[name] = ModelEntry(name, name, "method")
        if not self.entries:
            raise ValueError("no model and no per-image method to serve")
        self.seed = seed
        self._locks = {n: threading.Lock() for n in self.entries}

    @property
    def default(self) -> str:
        return next(iter(self.entries))

    def names(self, kind: str) -> list[str]:
        return [n for n, e in self.entries.items() if e.kind == kind]

    def get(self, name: str):
        """The inpainter of ``name``, loaded on first use (RequestError for unknown names)."""
        import jaxinpaint
        from jaxinpaint import systems

        if name not in self.entries:
            raise RequestError(f"unknown model {name!r}; this server has: {', '.join(self.entries)}")
        entry = self.entries[name]
        with self._locks[name]:
            if entry.inpainter is None:
                options = {}
                if entry.kind == "method":
                    defaults = systems.get(name).default_config()
                    if "model" in defaults and not defaults.model:
                        trained = self.names("model")
                        if not trained:
                            raise RequestError(f"{name} refines a trained model; start the server with --model")
                        options["model"] = self.entries[trained[0]].source
                t0 = time.perf_counter()
                entry.inpainter = jaxinpaint.load(entry.source, seed=self.seed, **options)
                log.info("loaded %s (%s) in %.1f s", name, entry.source, time.perf_counter() - t0)
            return entry.inpainter

    def preload(self) -> None:
        """Loads every trained model now (errors surface at start-up, not on the first request)."""
        for name in self.names("model"):
            self.get(name)


def _decode(data: bytes, what: str, max_pixels: int, *, mask: bool) -> np.ndarray:
    """An uploaded file as uint8 RGB (H, W, 3), or a mask as bool (H, W); refuses non-images and huge images
    from the header, before decoding."""
    from jaxinpaint.data import images, photos

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception as e:  # Pillow raises several types for non-images
        raise RequestError(f"{what}: not an image file Pillow can read ({type(e).__name__})", 415) from e
    if w * h > max_pixels:
        raise RequestError(f"{what}: {w}x{h} is {w * h / 1e6:.1f} megapixels, over this server's limit of "
                           f"{max_pixels / 1e6:g} (--max_megapixels)", 413)
    try:
        return images.load_mask(io.BytesIO(data)) if mask else images.load_rgb_uint8(io.BytesIO(data))
    except photos.UnreadableImageError as e:
        raise RequestError(f"{what}: cannot decode it ({e})", 415) from e


def inpaint_request(models: Models, files: Mapping[str, bytes], form: Mapping[str, str], *,
                    max_pixels: int) -> tuple[np.ndarray, str, float]:
    """``(result uint8 (H, W, 3), model name, seconds)`` for one request's files and fields."""
    from jaxinpaint import inference

    for field in ("image", "mask"):
        if not files.get(field):
            raise RequestError(f"missing file field {field!r} (multipart/form-data with 'image' and 'mask')")
    image = _decode(files["image"], "image", max_pixels, mask=False)
    hole = _decode(files["mask"], "mask", max_pixels, mask=True)
    if hole.shape != image.shape[:2]:
        raise RequestError(f"mask: {hole.shape[1]}x{hole.shape[0]} does not match the image's "
                           f"{image.shape[1]}x{image.shape[0]} (W x H)")
    name = form.get("model") or models.default
    try:
        strategy = inference.HDStrategy.of(form.get("hd_strategy") or None)
    except inference.InputError as e:
        raise RequestError(str(e)) from e
    inpainter = models.get(name)
    t0 = time.perf_counter()
    result = inpainter.inpaint(image, hole, hd_strategy=strategy)
    return result, name, time.perf_counter() - t0


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def page_html(config: Mapping[str, Any]) -> str:
    """The page with the server's settings inlined (no request needed before the first paint)."""
    text = importlib.resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return text.replace("/*CONFIG*/null", json.dumps(config).replace("</", "<\\/"))


# The page loads nothing from elsewhere: the browser is told so, and refuses anything else.
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def create_app(models: Models, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, hd_strategy: str = "crop"):
    """The Flask application (a WSGI callable): the page and the two API routes. ``hd_strategy`` is the page's
    initial choice for large photos (a request without the field gets ``'original'``)."""
    import flask
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    from jaxinpaint import inference

    app = flask.Flask("jaxinpaint.serve")
    max_bytes = int(max_upload_mb * 1024 * 1024)
    max_pixels = int(max_megapixels * 1e6)
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = max_bytes
    run_lock = threading.Lock()  # one inference at a time: the model already uses every core
    settings = {"models": models.names("model"), "methods": models.names("method"), "default": models.default,
                "hd_strategies": list(inference.HD_MODES), "hd_strategy": inference.HDStrategy.of(hd_strategy).mode,
                "max_upload_bytes": max_bytes, "max_pixels": max_pixels}

    def error(message: str, status: int):
        return flask.jsonify(error=message), status

    @app.after_request
    def headers(response):
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e):
        return error(f"upload too large: this server accepts at most {max_upload_mb:g} MB per request "
                     "(--max_upload_mb)", 413)

    @app.errorhandler(HTTPException)
    def http_error(e):
        return error(f"{e.code} {e.name}: {e.description}", e.code)

    @app.get("/")
    def index():
        return flask.Response(page_html(settings), mimetype="text/html")

    @app.get("/api/models")
    def list_models():
        return flask.jsonify(settings)

    @app.post("/api/inpaint")
    def inpaint():
        files = {k: f.read() for k, f in flask.request.files.items()}
        try:
            with run_lock:
                result, name, seconds = inpaint_request(models, files, flask.request.form, max_pixels=max_pixels)
        except RequestError as e:
            return error(str(e), e.status)
        except inference.InputError as e:
            return error(str(e), 400)
        except Exception as e:  # the model failed: say so, keep serving
            log.exception("inpainting failed")
            return error(f"inpainting failed: {type(e).__name__}: {e}", 500)
        log.info("%s: %dx%d in %.2f s", name, result.shape[1], result.shape[0], seconds)
        png = _png(result)
        if flask.request.accept_mimetypes.best == "application/json":
            return flask.jsonify(image=base64.b64encode(png).decode("ascii"), model=name, seconds=seconds,
                                 width=int(result.shape[1]), height=int(result.shape[0]))
        response = flask.Response(png, mimetype="image/png")
        response.headers["X-Jaxinpaint-Model"] = name
        response.headers["X-Jaxinpaint-Seconds"] = f"{seconds:.3f}"
        return response

    return app


def make_server(app, host: str = "127.0.0.1", port: int = 8080, threads: int = 4):
    """A waitress server for ``app`` (``port=0`` picks a free port: read ``server.effective_port``)."""
    from waitress.server import create_server

    return create_server(app, host=host, port=port, threads=threads, clear_untrusted_proxy_headers=True,
                         ident="jaxinpaint")


def url_of(server) -> str:
    host = server.effective_host
    host = f"[{host}]" if ":" in str(host) else host
    return f"http://{host}:{server.effective_port}/"


__all__ = ["Models", "RequestError", "create_app", "inpaint_request", "make_server", "page_html", "url_of"]
