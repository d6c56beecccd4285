"""OpenAI-compatible HTTP server (exaone-cpu serve); needs the [server] extra."""
