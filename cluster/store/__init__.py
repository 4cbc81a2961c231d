"""Registry database and content-addressed artifact store."""
