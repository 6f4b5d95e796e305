"""Latency of ``jaxinpaint serve``'s endpoint per image, as the page sees it (HTTP upload, decode, inpaint, PNG).

    python benchmarks/serve_latency.py --size 512 --requests 5                  # Big LaMa architecture, random
    python benchmarks/serve_latency.py --model converted/big-lama --size 512

Without ``--model`` a Big LaMa generator (ngf 64, 3 down-samplings, 18 blocks: 51M parameters) with random
weights is saved as a converted directory first (the speed does not depend on the weights). The server runs in
this process on a free port of 127.0.0.1; each request posts a photo and a LaMa "thick" mask, like the page.
The first request includes the compilation for that size; the others are reported as median and range, with
the load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid

import numpy as np
from PIL import Image


def _multipart(fields: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n"
                    f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in fields.items())
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _random_big_lama(directory: str) -> str:
    import jax
    import jax.numpy as jnp

    from jaxinpaint.io import checkpoint
    from jaxinpaint.systems.lama.model import FFCResNetGenerator

    model = FFCResNetGenerator()  # Big LaMa's defaults
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 4)))
    path = os.path.join(directory, "big-lama-random")
    checkpoint.save_models(path, "lama", {"generator": (model, variables)})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="any jaxinpaint.load source (default: random Big LaMa weights)")
    parser.add_argument("--size", type=int, default=512, help="square image side")
    parser.add_argument("--requests", type=int, default=5, help="timed requests after the first")
    parser.add_argument("--hd_strategy", default="original", help="the page's large-photo strategy")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    from jaxinpaint import masks, serve
    from jaxinpaint.data import photos

    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or _random_big_lama(tmp)
        models = serve.Models({"model": source}, methods=[])
        models.preload()
        server = serve.make_server(serve.create_app(models), port=0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = serve.url_of(server) + "api/inpaint"
        photo = Image.open(photos.builtin_photo_paths("holdout")[0]).convert("RGB")
        image = np.asarray(photo.resize((args.size, args.size), Image.BICUBIC))
        hole = masks.get("lama_thick_256")(np.random.default_rng(0), args.size, args.size)
        body, content_type = _multipart({"image": _png(image), "mask": _png((hole * 255).astype(np.uint8))})

        def request() -> tuple[float, float]:
            req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=1800) as response:
                response.read()
                model_secs = float(response.headers["X-Jaxinpaint-Seconds"])
            return time.perf_counter() - t0, model_secs

        first, _ = request()
        timed = [request() for _ in range(args.requests)]
        server.close()
    walls = [w for w, _ in timed]
    result = {"size": args.size, "hole_fraction": float(hole.mean()), "first_request_s": round(first, 2),
              "median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
              "max_s": round(max(walls), 3), "model_median_s": round(statistics.median(m for _, m in timed), 3),
              "requests": len(walls), "load_average": os.getloadavg(), "cpus": os.cpu_count(),
              "model": args.model or "Big LaMa architecture, random weights"}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
