"""Quality methods: the registry, the scorer protocol and one package per method."""
