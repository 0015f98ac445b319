"""Active-active sequencer over one shared PostgreSQL database (the model's "SQL domain")."""
