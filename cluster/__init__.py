"""Control plane: settings, store, app builder, control REST API, auth, CLI and SDK."""
