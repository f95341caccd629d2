"""One Cedar decision, as cheaply as cedarpy allows (every request of the gateway pays for it).

cedarpy's public ``is_authorized`` copies the request, re-serialises what it is given, and wraps the
JSON answer in several objects: about a fifth of a decision. Here the extension module's own
functions are called directly (they are typed and documented in ``cedarpy/_internal.pyi``; the
public API is a thin layer over them), and each principal's entity is parsed once: a decision
parses only the resource entity. Nothing else in the project touches cedarpy's extension module,
and the policy case tests pin the results to the shipped cases.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from cedarpy import _internal as cedar_ext


@functools.lru_cache(maxsize=4096)
def _principal(principal_json: str) -> cedar_ext.Entities:
    """A principal parsed once (id, org unit, status and role are all in the key: a change is a miss)."""
    return cedar_ext.Entities.from_json_str(principal_json)


def authorize(
    request: dict[str, Any], policies: cedar_ext.PolicySet, principal_json: str, resource_json: str
) -> dict[str, Any]:
    """Cedar's answer as a dict: ``decision`` ("Allow"/"Deny"), ``diagnostics.reason`` (policy ids
    that decided) and ``diagnostics.errors``. Raises ValueError for input Cedar cannot parse."""
    entities = _principal(principal_json).with_added_json_str(resource_json)
    answer: dict[str, Any] = orjson.loads(
        cedar_ext.is_authorized_batch([request], policies, entities, None, False)[0]
    )
    return answer
