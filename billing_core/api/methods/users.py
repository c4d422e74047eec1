"""API methods: users (see billing_core.api.registry)."""
