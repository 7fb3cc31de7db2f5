"""Low-level pieces every layer may use: argument checks, backend dispatch, temporary files."""
