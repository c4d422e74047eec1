"""API methods: tariffs (see billing_core.api.registry)."""
