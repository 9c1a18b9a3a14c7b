"""The runtime core: what every Cascade process may import (no pandas, no torch)."""
