"""API methods: disa (see billing_core.api.registry)."""
