"""API methods: dids (see billing_core.api.registry)."""
