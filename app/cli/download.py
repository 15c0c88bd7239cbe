"""``download datasets|weights|check``: fetch the collections and the ResNet-50 weights (also
``data_download.sh``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.config import Config

RESUME = "partial downloads are kept and resume on the next run"


def add_download_args(p: argparse.ArgumentParser) -> None:
    from app.net.download import SOURCES

    sub = p.add_subparsers(dest="what", required=True)
    ds = sub.add_parser("datasets", help="download and install collections")
    ds.add_argument("names", nargs="+", choices=[*SOURCES, "all"], metavar="NAME",
                    help=f"one or more of: {', '.join(SOURCES)}, all")
    ds.add_argument("--delete-archives", action="store_true", help="remove archives once installed")
    wt = sub.add_parser("weights", help="download the ResNet-50 ImageNet weights")
    ck = sub.add_parser("check", help="report what is present (exit 0 if everything is)")
    for q in (ds, ck):
        q.add_argument("--data", type=Path, default=None, help="data folder (default: <repo>/data)")
    for q in (wt, ck):
        q.add_argument("--weights-dir", type=Path, default=None,
                       help="checkpoints folder (default: torch.hub.get_dir()/checkpoints)")
    for q in (ds, wt):
        q.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_download(args: argparse.Namespace) -> int:
    from app.net.download import SOURCES, download_dataset, ensure_imagenet_weights

    data_dir = Path(getattr(args, "data", None) or Config().data_dir).expanduser().absolute()
    if args.what == "datasets":
        names = list(SOURCES) if "all" in args.names else list(dict.fromkeys(args.names))
        for name in names:
            path = download_dataset(name, data_dir, progress_bar=not args.no_progress,
                                    keep_archive=not args.delete_archives)
            print(f"{name}: ready in {path}")
    elif args.what == "weights":
        path = ensure_imagenet_weights(not args.no_progress, checkpoints_dir=args.weights_dir)
        print(f"weights: ready in {path}")
    else:
        return _check(data_dir, args.weights_dir)
    return 0


def _check(data_dir: Path, checkpoints_dir: Path | None) -> int:
    """Print one line per dataset and for the weights; 0 if everything is present."""
    from app.errors import DownloadError
    from app.net.download import SOURCES, dataset_present, imagenet_weights_path

    rows = [(name, dataset_present(name, data_dir), data_dir / name) for name in SOURCES]
    try:
        path = imagenet_weights_path(checkpoints_dir=checkpoints_dir)
        rows.append(("weights", path.is_file(), path))
    except DownloadError as exc:  # torchvision missing: cannot even name the file
        rows.append(("weights", False, f"(unknown: {exc})"))
    for what, present, where in rows:
        verified = " (verified download)" if (Path(where) / ".complete").is_file() else ""
        print(f"{what:12s} {'present' + verified if present else 'missing'}  {where}")
    return 0 if all(row[1] for row in rows) else 1
