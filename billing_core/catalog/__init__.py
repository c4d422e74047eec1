"""Catalog: the registry's declaration kit: how a method is defined
(name, access level, typed arguments, return kind, handler). Every subsystem's `*_api`
module declares its methods with it; billing_core.api dispatches them.
"""
