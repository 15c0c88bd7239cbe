"""Search the running app from a script, with gradio_client (installed with gradio).

    python scripts/api_example.py IMAGE [--url http://127.0.0.1:7860/] [--collection caltech101] [-k 5]

Lists the collections, searches with the image file, then searches again with the best match's id
(its stored vector: no model run), and prints the hits.
"""

from __future__ import annotations

import argparse
import sys

from gradio_client import Client, handle_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Search the running app with gradio_client.")
    p.add_argument("image", help="an image file to search with")
    p.add_argument("--url", default="http://127.0.0.1:7860/", help="the app's address")
    p.add_argument("--collection", default="caltech101")
    p.add_argument("-k", type=int, default=5)
    args = p.parse_args(argv)

    client = Client(args.url, verbose=False)  # the defaults: answers hold no server file paths
    for c in client.predict(api_name="/collections"):
        print(f"collection {c['name']}: {c['count']} images, {c['model'] or '-'}, {c['status']}")
    r = client.predict(handle_file(args.image), args.collection, args.k, api_name="/search_file")
    print(f"{r['query']} in {r['collection']} ({r['model']}, {r['timings_ms']['total']:.1f} ms):")
    for h in r["hits"]:
        print(f"  #{h['rank']} id {h['id']} {h['label']} {h['score']:.3f} {h['file']}")
    best = r["hits"][0]["id"]
    again = client.predict(args.collection, best, args.k, api_name="/search_item")
    print(f"item {best} as the query ({again['timings_ms']['total']:.1f} ms, no model run): "
          f"{[h['id'] for h in again['hits']]}")
    print(f"thumbnail of the best match: {args.url.rstrip('/')}{r['hits'][0]['thumbnail_url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
