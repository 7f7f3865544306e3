"""Policy kinds: what is specific to a kind of policy (vector networks, LLM agents), behind one protocol."""
