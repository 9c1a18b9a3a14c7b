"""``Annotated`` dependency aliases.

The routes read the app's long-lived objects (components, settings, metrics) from
``request.app.state`` directly: solving a dependency per request for each cost ~3% of the
gateway's CPU. Only the caller's identity stays a dependency, because it also declares the
security schemes in the OpenAPI spec.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from gateway.edge.auth import Principal
from gateway.edge.security import current_principal

# The caller, as authenticated by the security middleware; also declares the security schemes.
PrincipalDep = Annotated[Principal, Depends(current_principal)]
