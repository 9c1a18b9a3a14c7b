"""Refuse to deploy an overlay whose images are not pinned by a real digest.

    python docker/check_image_digests.py k8s/overlays/gpu-prod

Every entry of the overlay's ``images:`` must carry ``digest: sha256:<64 hex>`` (kustomize then
renders ``name@sha256:...``, immutable, instead of a tag), and no placeholder (the committed
``sha256:UNSET-...``, or all zeros). Exit 1 with the offending entries otherwise: run it as the
gate before ``kubectl apply -k``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def problems(overlay: Path) -> list[str]:
    """What is wrong with the overlay's image pins; empty when every image has a real digest."""
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    images = kustomization.get("images") or []
    if not images:
        return [f"{overlay}: no images: entries (nothing pinned)"]
    found = []
    for image in images:
        name = image.get("name", "?")
        digest = str(image.get("digest", ""))
        if "newTag" in image:
            found.append(f"{name}: pinned by tag {image['newTag']!r}, not by digest")
        if not DIGEST.fullmatch(digest):
            found.append(f"{name}: digest {digest or '(none)'!r} is not sha256:<64 hex>")
        elif set(digest.split(":", 1)[1]) == {"0"}:
            found.append(f"{name}: digest is the all-zero placeholder")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    found = problems(Path(argv[0]))
    for line in found:
        print(f"check_image_digests: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
