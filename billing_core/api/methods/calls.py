"""API methods: calls (see billing_core.api.registry)."""
