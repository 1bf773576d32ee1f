"""Rollout: Ray actors hosting one vLLM engine each (CPU build or GPU), versioned weight updates."""
