"""``jaxinpaint serve`` (``python -m jaxinpaint.serve``): a local page to paint a mask over a photo and inpaint
it, with a JSON/HTTP endpoint scripts can call (``jaxinpaint.serve`` documents both).

    jaxinpaint serve --model=converted/big-lama                     # http://127.0.0.1:8080/
    jaxinpaint serve --model=lama=converted/big-lama --model=mine=workdirs/run1 --port=9000
    jaxinpaint serve --model=exported/big-lama --hd_strategy=resize --max_upload_mb=50

``--model`` is anything ``jaxinpaint.load`` takes (``NAME=SOURCE`` names it on the page); every per-image
method is offered too. The server binds to 127.0.0.1 (this machine only); ``--host=0.0.0.0`` exposes it to
the network, with no authentication: only on a network you trust.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from jaxinpaint.cli import common

PROG = "jaxinpaint serve"


def _parser() -> common.ArgumentParser:
    from jaxinpaint import inference, serve

    p = common.ArgumentParser(prog=PROG, description="A local web page to paint a mask over a photo and inpaint it "
                              "with any loaded model or per-image method, and the JSON/HTTP endpoint behind it.")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]SOURCE",
                   help="a model to offer (repeatable): training workdir, converted directory, export, original "
                        "weight file; the first is the default")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    p.add_argument("--hd_strategy", default="crop", choices=inference.HD_MODES,
                   help="the page's initial choice for large photos (IOPaint's default is crop)")
    p.add_argument("--max_upload_mb", type=float, default=serve.DEFAULT_MAX_UPLOAD_MB,
                   help="refuse requests larger than this (HTTP 413)")
    p.add_argument("--max_megapixels", type=float, default=serve.DEFAULT_MAX_MEGAPIXELS,
                   help="refuse images with more pixels than this, read from the header before decoding (413)")
    p.add_argument("--threads", type=int, default=4, help="HTTP worker threads (inference runs one at a time)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-image methods' random choices")
    p.add_argument("--no_preload", action="store_true",
                   help="load models on their first request instead of at start-up")
    common.add_verbose(p)
    return p


def _sources(values: Sequence[str]) -> dict[str, str]:
    """``NAME=SOURCE`` or ``SOURCE`` (named after its last path component) -> {name: source}."""
    from jaxinpaint import systems

    sources: dict[str, str] = {}
    for value in values:
        name, sep, source = value.partition("=")
        if not sep or os.path.exists(value):
            name, source = os.path.basename(os.path.normpath(value)) or value, value
        if not os.path.exists(source) and source not in systems.names("solver"):
            raise common.UsageError(f"--model={value}: {source}: no such file or directory (give a training workdir, "
                                    "a directory from `jaxinpaint convert` or `jaxinpaint export`, or an original "
                                    "weight file)")
        if name in sources:
            raise common.UsageError(f"--model={value}: the name {name!r} is taken; use NAME=SOURCE")
        sources[name] = source
    return sources


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    common.setup_logging(args.verbose)
    from jaxinpaint import serve

    try:
        if not 0 <= args.port <= 65535:
            raise common.UsageError(f"--port={args.port}: must be in 0..65535")
        for flag in ("max_upload_mb", "max_megapixels", "threads"):
            if getattr(args, flag) <= 0:
                raise common.UsageError(f"--{flag} must be positive, got {getattr(args, flag)}")
        models = serve.Models(_sources(args.model), seed=args.seed)
        if not args.no_preload:
            try:
                models.preload()
            except Exception as e:  # a path that exists but is not a model
                raise common.UsageError(f"--model: {type(e).__name__}: {e}") from e
        app = serve.create_app(models, max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels,
                               hd_strategy=args.hd_strategy)
        try:
            server = serve.make_server(app, args.host, args.port, threads=args.threads)
        except OSError as e:
            raise common.UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from e
    except (common.UsageError, ValueError) as e:
        return common.fail(PROG, e)
    print(f"Serving {', '.join(models.entries)} on {serve.url_of(server)} (Ctrl-C to stop)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
