"""API methods: routes (see billing_core.api.registry)."""
