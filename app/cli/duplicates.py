"""``duplicates``: exact copies, edited copies and near-identical shots in a collection, as groups.

    python -m app.cli duplicates --collection my-photos --json                  # every tier, JSON Lines
    python -m app.cli duplicates --collection my-photos --tier edited --strictness strict
    python -m app.cli duplicates --collection my-photos --tier exact --clean    # keep one, trash the others
    python -m app.cli duplicates --collection my-photos --undo                  # put them back

Tiers: ``exact`` (same bytes or same pixels), ``edited`` (resized, recompressed, cropped, rotated, mirrored,
colour-changed copies), ``shots`` (near-identical shots, e.g. a burst). ``--json`` prints one object per
group: ``tier``, ``members`` (``id``, ``path``), ``keeper`` (the largest resolution, then the oldest file)
and ``score``. The first run reads every photo once (its size, pixel digest and local features, kept in
``features/NAME.dedup.npz``); later runs read only new ones.

``--clean`` moves every member but the keeper of each listed group to the trash folder of the collection's
folder (``.duplicates-trash/``, never scanned), records each move in its manifest and removes the moved
items from the collection; nothing is deleted. ``--undo`` moves them back and adds them again (a file that
now sits at an original path is never overwritten: the photo is restored beside it, and the output says so).
"""

from __future__ import annotations

import argparse
import json

from app.cli.common import config_from_args

# app.service.duplicates.TIERS and STRICTNESS, spelled here so building the parser imports nothing more
# (tests/test_duplicates.py checks they agree)
TIERS = ("exact", "edited", "shots")
STRICTNESS = ("loose", "default", "strict")


def add_duplicates_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", "-c", required=True, help="collection name")
    p.add_argument("--tier", default=None, choices=TIERS, help="only this tier (default: all three)")
    p.add_argument("--strictness", default="default", choices=STRICTNESS,
                   help="a point of the measured precision-recall curve (README, Duplicates)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--clean", action="store_true",
                      help="keep each group's keeper, move the others to the trash folder (needs --tier)")
    what.add_argument("--undo", action="store_true", help="move the photos of the trash folder back")
    p.add_argument("--json", action="store_true", help="JSON Lines: one object per group (or per moved photo)")
    p.add_argument("--indexes", default=None, metavar="DIR", help="folder of built indexes (default: indexes/)")
    p.add_argument("--features", default=None, metavar="DIR", help="folder of stored features (default: features/)")


def cmd_duplicates(args: argparse.Namespace) -> int:
    from app.errors import DatasetError
    from app.service.duplicates import find_duplicates

    config = config_from_args(args)
    if args.undo:
        return _undo(config, args)
    if args.clean and not args.tier:
        raise DatasetError("--clean needs --tier.", hint="Say which groups to clean, e.g. --tier exact.")
    report = find_duplicates(config, args.collection, tier=args.tier, strictness=args.strictness)
    if args.clean:
        return _clean(config, args, report)
    for g in report.groups:
        if args.json:
            print(json.dumps(g.to_json(report.paths)))
        else:
            print(f"{g.tier} ({len(g.members)}, score {g.score:.3f}): keep {report.paths[g.keeper]}")
            for i in g.members:
                if i != g.keeper:
                    print(f"    {report.paths[i]}")
    if not args.json:
        print(f"{len(report.groups)} groups; {report.measured} photos read, {report.searched} searched, "
              f"{report.seconds:.1f} s")
    return 0


def _clean(config, args: argparse.Namespace, report) -> int:
    from app.service.dedup_trash import clean_groups

    done = clean_groups(config, args.collection, [(g.keeper, g.members) for g in report.groups])
    return _print_moves(done, args.json, "moved to the trash")


def _undo(config, args: argparse.Namespace) -> int:
    from app.service.dedup_trash import undo_clean

    done = undo_clean(config, args.collection)
    return _print_moves(done, args.json, "restored")


def _print_moves(done, as_json: bool, verb: str) -> int:
    for move in done.moves:
        if as_json:
            print(json.dumps(move))
        else:
            note = f" ({move['note']})" if move.get("note") else ""
            print(f"{verb}: {move['path']} -> {move['to']}{note}")
    if not as_json:
        print(f"{len(done.moves)} photos {verb}; {done.summary_line}")
    return 0
