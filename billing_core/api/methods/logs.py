"""API methods: logs (see billing_core.api.registry)."""
