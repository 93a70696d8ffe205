"""Where studies and their results live: storage URLs, artifacts, exported configurations."""
