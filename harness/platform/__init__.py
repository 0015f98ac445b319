"""Machine readiness: Docker daemon, compose v2 plugin, locally built images, free ports (``setup``, ``doctor``)."""
