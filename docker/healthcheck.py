"""Container HEALTHCHECK probe: exit 0 when ``http://127.0.0.1:<port><path>`` answers 2xx.

Usage: ``python healthcheck.py PORT_ENV_VAR DEFAULT_PORT PATH``. The port comes from the
service's own settings variable (``GATEWAY_PORT``, ``MF_PORT``), so a container started with
another port still checks the right one. Stdlib only: it runs in every image, Triton's included.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    """Probe once; 0 healthy, 1 unhealthy, 2 bad usage."""
    if len(argv) != 3:
        print("usage: healthcheck.py PORT_ENV_VAR DEFAULT_PORT PATH", file=sys.stderr)
        return 2
    port_env, default_port, path = argv
    url = f"http://127.0.0.1:{os.environ.get(port_env, default_port)}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
