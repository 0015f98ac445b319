"""Root conftest: the ha-chaos pytest plugin is loaded through its entry point (pyproject ``pytest11``)."""
