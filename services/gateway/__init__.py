"""The gateway: the public API, projects and jobs; it coordinates the four worker services."""
