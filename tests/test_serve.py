"""``jaxinpaint serve``: the JSON/HTTP endpoint (Flask's test client: answers, refusals, known pixels kept) and the
page end to end in a real headless Chromium against ``python -m jaxinpaint serve --model=<converted LaMa dir>``:
open a photo, paint a stroke, run, download the PNG, and check that every pixel away from the stroke is the
photo's."""

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from jaxinpaint import serve
from jaxinpaint.cli import serve as serve_cli
from jaxinpaint.data import photos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tiny_lama_dir):
    return tiny_lama_dir


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A real photo (the built-in hold-out one), 192x128, as an RGB PNG."""
    image = Image.open(photos.builtin_photo_paths("holdout")[0]).convert("RGB").resize((192, 128), Image.BICUBIC)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    image.save(path)
    return str(path), np.asarray(image)


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(model_dir):
    app = serve.create_app(serve.Models({"lama": model_dir}), max_upload_mb=0.5, max_megapixels=0.05)
    return app.test_client()


def _post(client, image, mask, **fields):
    data = {**fields}
    if image is not None:
        data["image"] = (io.BytesIO(image), "image.png")
    if mask is not None:
        data["mask"] = (io.BytesIO(mask), "mask.png")
    return client.post("/api/inpaint", data=data, content_type="multipart/form-data")


def test_endpoint_answers_and_refusals(client, photo):
    _, pixels = photo
    hole = np.zeros(pixels.shape[:2], bool)
    hole[40:70, 60:120] = True
    mask = _png((hole * 255).astype(np.uint8))

    listing = client.get("/api/models").get_json()
    assert listing["default"] == "lama" and listing["models"] == ["lama"] and "lama_refine" in listing["methods"]
    page = client.get("/")
    assert page.status_code == 200 and b"jaxinpaint" in page.data and b'"default": "lama"' in page.data
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert not re.search(rb"(src|href)=[\"']https?://", page.data)  # nothing loaded from elsewhere

    response = _post(client, _png(pixels), mask)
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Jaxinpaint-Model"] == "lama"
    out = np.asarray(Image.open(io.BytesIO(response.data)))
    np.testing.assert_array_equal(out[~hole], pixels[~hole])
    assert np.any(out[hole] != pixels[hole])

    as_json = client.post("/api/inpaint", headers={"Accept": "application/json"}, content_type="multipart/form-data",
                          data={"image": (io.BytesIO(_png(pixels)), "i.png"), "mask": (io.BytesIO(mask), "m.png"),
                                "hd_strategy": "resize"}).get_json()
    assert as_json["model"] == "lama" and (as_json["width"], as_json["height"]) == (192, 128)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(as_json["image"])))), out)

    def refused(response, status, needle):
        assert response.status_code == status, response.data
        assert needle in response.get_json()["error"], response.get_json()

    refused(_post(client, b"this is not an image", mask), 415, "not an image")
    refused(_post(client, _png(pixels), None), 400, "'mask'")
    refused(_post(client, _png(pixels), _png(np.zeros((10, 10), np.uint8))), 400, "does not match")
    refused(_post(client, _png(pixels), mask, model="nope"), 400, "unknown model 'nope'")
    refused(_post(client, _png(pixels), mask, hd_strategy="tiles"), 400, "hd_strategy")
    big = np.zeros((300, 300, 3), np.uint8)  # 0.09 MP > 0.05, a small file: refused from the header
    refused(_post(client, _png(big), _png(big[..., 0])), 413, "megapixels")
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), np.uint8)  # ~480 kB: over 0.5 MB with the mask
    refused(_post(client, _png(noise), _png(noise)), 413, "too large")


def test_serve_usage_errors(tmp_path, capsys):
    def one_error(args, needle):
        assert serve_cli.main(args) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("jaxinpaint serve: error: ") and needle in err[0], err

    one_error([f"--model={tmp_path / 'missing'}"], "no such file")
    one_error(["--port=70000"], "--port")
    one_error(["--max_upload_mb=0"], "--max_upload_mb")
    (tmp_path / "notamodel").mkdir()
    one_error([f"--model={tmp_path / 'notamodel'}"], "neither a training workdir")
    with pytest.raises(SystemExit) as e:  # argparse's own checks: one line too
        serve_cli.main(["--hd_strategy=tiles"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice" in err[0], err


# ------------------------------------------------------------------------------------------------------------
# The page in a real browser.
# ------------------------------------------------------------------------------------------------------------


def _browser():
    """(chromium, chromedriver) paths; skipped where none is installed, except under CI (.ci/run installs them)."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        driver = None
    if browser and driver:
        return browser, driver
    message = ("needs Chromium, chromedriver and selenium (apt-get install chromium chromium-driver; pip install "
               "selenium==4.51.0); .ci/run installs them")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def server(model_dir):
    """`python -m jaxinpaint serve --model=DIR --port=0` as a user starts it; yields its URL."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxinpaint", "serve", f"--model={model_dir}", "--port=0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
            url = match.group(1) if match else None
        assert url, "".join(lines)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_page_paint_run_download_in_headless_chromium(server, photo, tmp_path):
    browser, driver_path = _browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,800"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.get(server)
        path, pixels = photo
        driver.find_element(By.ID, "file").send_keys(path)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "run").is_enabled())
        canvas = driver.find_element(By.ID, "mask")
        assert (canvas.size["width"], canvas.size["height"]) == (192, 128)  # shown 1:1: page px = image px
        brush = driver.find_element(By.ID, "brush")
        driver.execute_script("arguments[0].value = 12; arguments[0].dispatchEvent(new Event('input'))", brush)

        # One horizontal stroke through the middle, from x=56 to x=136 at y=64 (image pixels).
        chain = ActionChains(driver).move_to_element_with_offset(canvas, -40, 0).click_and_hold()
        for _ in range(8):
            chain = chain.move_by_offset(10, 0)
        chain.release().perform()
        driver.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.ID, "download").is_displayed()
                   or "failed" in d.find_element(By.ID, "status").text)
        assert "done" in driver.find_element(By.ID, "status").text, driver.find_element(By.ID, "status").text
        driver.save_screenshot(str(tmp_path / "page.png"))
        driver.find_element(By.ID, "download").click()
        target = downloads / "photo_inpainted.png"
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert target.exists(), os.listdir(downloads)
    finally:
        driver.quit()

    result = np.asarray(Image.open(target).convert("RGB"))
    assert result.shape == pixels.shape
    yy, xx = np.mgrid[:128, :192]
    dist = np.hypot(np.clip(xx + 0.5, 56, 136) - (xx + 0.5), yy + 0.5 - 64)  # distance to the stroke's segment
    outside = dist > 12 / 2 + 2  # brush radius plus the canvas' anti-aliased edge
    np.testing.assert_array_equal(result[outside], pixels[outside])
    inside = dist < 12 / 2 - 1
    assert np.mean(np.any(result[inside] != pixels[inside], axis=-1)) > 0.5  # the stroke was inpainted
