"""Layer 2, net: everything that talks to the network. The image-URL fetcher and its address policy
(SSRF-safe, timeouts, size cap), and the resumable, checksummed dataset and weights downloads."""

from app.net.download import (
    SOURCES,
    dataset_present,
    download_dataset,
    download_file,
    ensure_imagenet_weights,
    imagenet_weights_path,
    safe_extract,
)
from app.net.fetch import fetch_url
from app.net.urlpolicy import address_refusal, parse_url

__all__ = [
    "SOURCES",
    "address_refusal",
    "dataset_present",
    "download_dataset",
    "download_file",
    "ensure_imagenet_weights",
    "fetch_url",
    "imagenet_weights_path",
    "parse_url",
    "safe_extract",
]
