"""The Dockerfile's install step builds the package from what it has copied by then.

No Docker engine runs here (nor in CI), so the image itself is never built; what can break it
without anyone noticing is a file the package build needs (the readme, the licence file that
`license-files` names, a package) missing from the COPY lines before `pip install .`. This
copies exactly those sources into an empty folder and builds the wheel there, as the image
would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _copied_before_install(dockerfile: str) -> list[str]:
    """The sources of the Dockerfile's COPY lines that come before its `pip install .`."""
    sources: list[str] = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["RUN"] and "pip" in words and "." in words:
            return sources
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]  # the last word is the destination
    raise AssertionError("the Dockerfile has no `pip install .` step")


def test_the_dockerfile_copies_what_the_package_build_needs(tmp_path: Path) -> None:
    sources = _copied_before_install((ROOT / "Dockerfile").read_text())
    context = tmp_path / "app"
    context.mkdir()
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns(
                "__pycache__"))
        else:
            shutil.copy(path, context / source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
         str(tmp_path / "wheel"), str(context)],
        capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, (
        f"the package does not build from what the Dockerfile copies ({sources}):\n"
        f"{built.stderr[-2000:]}")
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    # The licence travels in the image's installed package, and the pipeline's code with it.
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    assert "dataflows/main.py" in names


def test_the_image_runs_where_its_user_can_write() -> None:
    """The pipeline runs as `cdc`: its working directory (where Bytewax writes dataflow.json
    when the API is on) must be that user's, and the API cache is pointed at /tmp. /app, where
    the package is built, is root's: with it as the working directory the pipeline failed to
    start as soon as the metrics API was turned on."""
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    user = [words[1] for words in lines if words[:1] == ["USER"]][-1]
    workdir = [words[1] for words in lines if words[:1] == ["WORKDIR"]][-1]
    owned = [words for words in lines if words[:1] == ["RUN"] and "chown" in words]
    assert any(f"{user}:{user}" in words and workdir in words for words in owned), (
        f"the last WORKDIR {workdir} is not made {user}'s")
    text = (ROOT / "Dockerfile").read_text()
    assert "BYTEWAX_DATAFLOW_API_CACHE_PATH=/tmp" in text
