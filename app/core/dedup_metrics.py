"""Pure measures for finding duplicate photos (:mod:`app.service.duplicates` groups with them).

* :func:`pixel_digest`: a hash of the decoded pixels (and size): the same picture saved twice, or in
  another lossless format, gives the same digest (the *exact* tier, with the file's own content hash).
* :func:`local_features`: ORB keypoints and descriptors (OpenCV) of a photo scaled to
  :data:`LOCAL_SIDE` pixels on its long side, of the photo and of its mirror image.
* :func:`match_pair`: the second check on a candidate pair: descriptor matches, then a similarity
  transform (rotation, scale, shift) fitted by RANSAC, tried on the photo and on its mirror. It gives
  the number of inlier matches and the *containment*: how much of one photo lies inside the other under
  that transform (an edited copy is contained in its original: ~1; two shots of a burst each show
  something the other does not).
* :func:`choose_keeper`: the suggested keeper of a group: largest resolution, then the oldest file.

No state, no files: each function takes arrays or images and returns numbers. OpenCV loads on first use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

LOCAL_SIDE = 320  # the long side local features are computed at
LOCAL_FEATURES = 400  # ORB keypoints kept per photo (and as many for its mirror)
RATIO = 0.8  # Lowe's ratio test for descriptor matches
RANSAC_PX = 4.0  # reprojection error allowed, in LOCAL_SIDE pixels


@dataclass(frozen=True)
class LocalFeatures:
    """ORB keypoints (``xy``: float32 [n, 2], in the scaled photo) and descriptors (uint8 [n, 32]) of a photo
    and of its mirror image, and the scaled photo's size."""

    xy: np.ndarray
    desc: np.ndarray
    mirror_xy: np.ndarray
    mirror_desc: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class PairMatch:
    """What the second check found for a pair: inlier matches of the best similarity transform (0: none),
    ``containment`` in [0, 1] (how much of the smaller view lies inside the other), ``mirrored``."""

    inliers: int
    containment: float
    mirrored: bool = False


NO_MATCH = PairMatch(0, 0.0, False)


def pixel_digest(img: Image.Image) -> str:
    """BLAKE2b of the decoded RGB pixels and the size: equal for the same picture in any lossless file."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{rgb.width}x{rgb.height}\0".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def local_features(img: Image.Image, *, side: int = LOCAL_SIDE, n: int = LOCAL_FEATURES) -> LocalFeatures:
    """ORB features of ``img`` (any size) scaled to ``side`` on its long side, and of its mirror."""
    import cv2

    scale = side / max(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    gray = np.asarray(img.convert("L").resize(size, Image.Resampling.BILINEAR))
    orb = cv2.ORB_create(nfeatures=n, fastThreshold=8, edgeThreshold=15, patchSize=15)
    xy, desc = _orb(orb, gray)
    mxy, mdesc = _orb(orb, np.ascontiguousarray(gray[:, ::-1]))
    return LocalFeatures(xy, desc, mxy, mdesc, size[0], size[1])


def _orb(orb, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kps, desc = orb.detectAndCompute(gray, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return np.array([k.pt for k in kps], dtype=np.float32), desc.astype(np.uint8)


def match_pair(a: LocalFeatures, b: LocalFeatures) -> PairMatch:
    """The second check: the better of ``b`` against ``a`` and ``b``'s mirror against ``a``."""
    plain = _match(a.xy, a.desc, b.xy, b.desc, (a.width, a.height), (b.width, b.height), mirrored=False)
    mirror = _match(a.xy, a.desc, b.mirror_xy, b.mirror_desc, (a.width, a.height), (b.width, b.height),
                    mirrored=True)
    return max(plain, mirror, key=lambda m: m.inliers)


def _match(xa: np.ndarray, da: np.ndarray, xb: np.ndarray, db: np.ndarray, size_a: tuple[int, int],
           size_b: tuple[int, int], *, mirrored: bool) -> PairMatch:
    import cv2

    if len(da) < 2 or len(db) < 2:
        return NO_MATCH
    knn = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(db, da, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 4:
        return PairMatch(0, 0.0, mirrored)
    src = np.float32([xb[m.queryIdx] for m in good])
    dst = np.float32([xa[m.trainIdx] for m in good])
    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX,
                                                  maxIters=500, confidence=0.99)
    if transform is None or mask is None:
        return PairMatch(0, 0.0, mirrored)
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    if not 0.25 <= scale <= 4.0:
        return PairMatch(0, 0.0, mirrored)
    return PairMatch(int(mask.sum()), containment(transform, size_a, size_b), mirrored)


def containment(transform: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]) -> float:
    """How much of the smaller view lies inside the other: ``b``'s frame mapped by ``transform`` (2x3, b -> a)
    intersected with ``a``'s frame, over the smaller of the two areas."""
    import cv2

    wb, hb = size_b
    wa, ha = size_a
    corners = np.float32([[0, 0], [wb, 0], [wb, hb], [0, hb]])
    mapped = (corners @ transform[:, :2].T + transform[:, 2]).astype(np.float32)
    rect = np.float32([[0, 0], [wa, 0], [wa, ha], [0, ha]])
    mapped_area = abs(cv2.contourArea(mapped))
    if mapped_area <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(mapped.reshape(-1, 1, 2), rect.reshape(-1, 1, 2))
    return float(min(1.0, inter / min(mapped_area, float(wa * ha))))


def union_find_groups(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the graph on ``n`` nodes with edges ``(i[k], j[k])``: a root per node."""
    parent = np.arange(n, dtype=np.int64)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def choose_keeper(ids: Sequence[int], pixels: Sequence[int], mtimes_ns: Sequence[int]) -> int:
    """The suggested keeper: the largest resolution (width x height), then the oldest file, then the lowest id."""
    order = sorted(range(len(ids)), key=lambda k: (-int(pixels[k]), int(mtimes_ns[k]), int(ids[k])))
    return int(ids[order[0]])
