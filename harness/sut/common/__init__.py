"""Building blocks shared by every node: config, logging, DB access, election/fencing, health server."""
