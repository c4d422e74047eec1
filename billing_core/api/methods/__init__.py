"""Importing this package registers every API method in billing_core.api.registry.REGISTRY."""

from billing_core.api.methods import (  # noqa: F401 - imported for their registrations
    accounts,
    calls,
    currencies,
    dids,
    disa,
    extensions,
    keys,
    logs,
    routes,
    tariffs,
    users,
)
