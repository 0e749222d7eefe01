"""Model access: litellm for every provider, plus the embedded local model."""
