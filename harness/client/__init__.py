"""Clients of the deployment's nodes: the one interface (``api``) and its implementations (``json_api``)."""
