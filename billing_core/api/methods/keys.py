"""API methods: keys (see billing_core.api.registry)."""
